// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// namedFigure is one tracer's figure for a target.
type namedFigure struct {
	name  string
	value float64
}

// benchResults is what the cost tables measured of nstrace, to set it
// against the targets at the end.
type benchResults struct {
	kernel  map[string]float64 // ns per run, by program
	hooks   string             // which syscall hook path was in use
	cpu     []namedFigure      // µs of nstrace's CPU per event in the storm
	idle    []namedFigure      // ticks at idle
	idleFor time.Duration
	floor   *floors // what programs that do (almost) nothing cost here
}

var results benchResults

// The targets: ns per run of each exec, fork and exit program and of the
// three together, per system call on the tracepoint path, µs of nstrace's
// own CPU per event in a storm, and ticks in 20 s of idle.
const (
	targetProgram = 1000.0
	targetTotal   = 3000.0
	targetSyscall = 120.0
	targetCPU     = 15.0
	targetIdle    = 2.0
)

func (r *benchResults) print() {
	fmt.Println("against the targets:")
	row := func(what string, got, target float64, unit string) {
		verdict := "met"
		if got > target {
			verdict = "NOT met"
		}
		fmt.Printf("  %-44s %9.1f %-3s (target <= %g): %s\n", what, got, unit, target, verdict)
	}
	if k := r.kernel; k != nil {
		var total float64
		for _, p := range []string{"nst_fork", "nst_exec", "nst_exit"} {
			row(p+" per run", k[p], targetProgram, "ns")
			fl := r.floor.of(p)
			total += fl
			r.floor.print(fl, p)
		}
		row("fork+exec+exit", k["nst_fork"]+k["nst_exec"]+k["nst_exit"], targetTotal, "ns")
		r.floor.print(total, "fork+exec+exit")
		if enter, ok := k["nst_sys_enter"]; ok {
			row("per system call (sys_enter+sys_exit)", enter+k["nst_sys_exit"], targetSyscall, "ns")
			r.floor.print(r.floor.of("nst_sys_enter")+r.floor.of("nst_sys_exit"), "syscall")
		} else {
			fmt.Printf("  %-44s %9s     (the namespace calls' fentry programs run only for them)\n", "per system call", "0")
		}
	}
	if r.hooks != "" {
		fmt.Printf("  (%s)\n", r.hooks)
	}
	for _, f := range r.cpu {
		row(f.name+", CPU per event (storm)", f.value, targetCPU, "µs")
	}
	for _, f := range r.idle {
		// The target is for 20 s; a shorter run is scaled to it.
		row(f.name+", idle ticks per 20 s", f.value*float64(20*time.Second)/float64(r.idleFor), targetIdle, "")
	}
}

// of is the floor under program p: an empty program on its hook, plus
// the ring buffer record every event program queues, plus, for exec, the
// read of the new image's arguments. 0 if unknown.
func (f *floors) of(p string) float64 {
	if f == nil {
		return 0
	}
	exec := f.empty["sched_process_exec"]
	ring, user := f.ring-exec, f.user-exec
	switch p {
	case "nst_fork":
		return f.empty["sched_process_fork"] + ring
	case "nst_exec":
		return exec + ring + user
	case "nst_exit":
		return f.empty["sched_process_exit"] + ring
	case "nst_sys_enter":
		return f.empty["sys_enter"]
	case "nst_sys_exit":
		return f.empty["sys_exit"]
	}
	return 0
}

// print puts the floor under a target's line.
func (f *floors) print(ns float64, what string) {
	if f == nil || ns == 0 {
		return
	}
	how := "an empty program on its hook and an 8-byte ring buffer record"
	switch what {
	case "nst_exec":
		how += " and an 8-byte read of user memory"
	case "fork+exec+exit":
		how = "the three floors above"
	case "syscall":
		how = "an empty program on each of the two hooks"
	}
	fmt.Printf("  %-44s %9.1f ns (%s)\n", "  floor here", ns, how)
}

// stealMeter reads the machine's CPU time stolen by its hypervisor
// (/proc/stat): a figure taken while the host gives this machine's CPUs
// to others says more about the host than about a tracer.
type stealMeter struct{ steal, total uint64 }

// since returns the share of CPU time stolen since the last call.
func (m *stealMeter) since() string {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return "unknown"
	}
	var total, steal uint64
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i < 8 { // guest time is counted in user time already
			total += n
		}
		if i == 7 {
			steal = n
		}
	}
	dt, ds := total-m.total, steal-m.steal
	m.total, m.steal = total, steal
	if dt == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.1f%% of CPU time", 100*float64(ds)/float64(dt))
}
