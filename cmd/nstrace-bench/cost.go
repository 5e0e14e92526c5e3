// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
)

// progStat is one BPF program's run count and total run time, from the
// fdinfo of a tracer's own program fds: other tracers on the host load
// programs of the same name, and those are not counted.
type progStat struct {
	runs, ns uint64
}

// progStats reads the programs pid holds, by name.
func progStats(pid int) map[string]progStat {
	out := map[string]progStat{}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || link != "anon_inode:bpf-prog" {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		var id int
		var st progStat
		for _, line := range strings.Split(string(info), "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "prog_id":
				id, _ = strconv.Atoi(v)
			case "run_time_ns":
				st.ns, _ = strconv.ParseUint(v, 10, 64)
			case "run_cnt":
				st.runs, _ = strconv.ParseUint(v, 10, 64)
			}
		}
		name := progName(id)
		if name == "" {
			name = fmt.Sprintf("prog %d", id)
		}
		prev := out[name]
		out[name] = progStat{runs: prev.runs + st.runs, ns: prev.ns + st.ns}
	}
	return out
}

// progName asks the kernel for a program's name; "" if it cannot.
func progName(id int) string {
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if err != nil {
		return ""
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return ""
	}
	return info.Name
}

// statsOn turns on the kernel's BPF run-time statistics and returns how to
// put the setting back.
func statsOn() (func(), error) {
	const knob = "/proc/sys/kernel/bpf_stats_enabled"
	old, err := os.ReadFile(knob)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(knob, []byte("1"), 0o644); err != nil {
		return nil, err
	}
	return func() { _ = os.WriteFile(knob, old, 0o644) }, nil
}

// cpuNS is the CPU time pid's threads have used, in ns (schedstat).
func cpuNS(pid int) uint64 {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var sum uint64
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, e.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			v, _ := strconv.ParseUint(f[0], 10, 64)
			sum += v
		}
	}
	return sum
}

// ticks is pid's utime+stime in clock ticks, from /proc/PID/stat.
func ticks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command, which may hold spaces, in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// running is a tracer started for one of the cost measurements.
type running struct {
	cmd *exec.Cmd
	out string
}

func (r *running) pid() int { return r.cmd.Process.Pid }

func (r *running) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
	}
	os.Remove(r.out)
}

// events counts the lines a tracer wrote: one an event, for every tracer
// here.
func (r *running) events() int {
	n, _ := countLines(r.out, "")
	return n
}

func start(t *tracer, dir string) (*running, error) {
	out := filepath.Join(dir, fmt.Sprintf("cost-%d", time.Now().UnixNano()))
	cmd, err := startTracer(t, out, dir)
	if err != nil {
		return nil, err
	}
	return &running{cmd: cmd, out: out}, nil
}

// paced runs prog about rate times a second for d: a light, steady load.
func paced(prog string, rate int, d time.Duration) int {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(d)
	n := 0
	var cmds []*exec.Cmd
	for time.Now().Before(end) {
		<-tick.C
		c := exec.Command(prog)
		if c.Start() == nil {
			cmds = append(cmds, c)
			n++
		}
		// Reap as we go, so the load stays light.
		for len(cmds) > 8 {
			_ = cmds[0].Wait()
			cmds = cmds[1:]
		}
	}
	for _, c := range cmds {
		_ = c.Wait()
	}
	return n
}

// costs measures what each tracer costs per event, in the kernel and in
// its own process, how many system calls it makes per event, what it uses
// at idle, and how much it slows a syscall-bound program.
func costs(tracers []*tracer, dir, prog string) {
	undo, err := statsOn()
	if err != nil {
		fmt.Printf("kernel costs skipped: turning on kernel.bpf_stats_enabled: %v\n", err)
	} else {
		defer undo()
	}
	for _, table := range []func(){
		func() { kernelTable(tracers, dir) },
		floorTable,
		func() { cpuTable(tracers, dir, prog) },
		func() { syscallTable(tracers, dir) },
		func() { idleTable(tracers, dir) },
		func() { ddTable(tracers, dir) },
	} {
		var m stealMeter
		m.since()
		table()
		fmt.Printf("(host steal during this table: %s)\n\n", m.since())
	}
	results.print()
}

// kernelStorms is how many storms the kernel table takes the median of:
// one storm's figure moves by a tenth on this kind of machine.
const kernelStorms = 3

// stormMedians runs kernelStorms exec storms and returns, for each program
// snap reports, its median ns per run and its runs in all. snap reads
// every program's totals so far.
func stormMedians(snap func() (map[string]progStat, error)) (map[string]float64, map[string]uint64, error) {
	samples := map[string][]float64{}
	runs := map[string]uint64{}
	for i := 0; i < kernelStorms; i++ {
		before, err := snap()
		if err != nil {
			return nil, nil, err
		}
		if _, err := storm("/bin/true"); err != nil {
			return nil, nil, err
		}
		after, err := snap()
		if err != nil {
			return nil, nil, err
		}
		for k, a := range after {
			if d := (progStat{runs: a.runs - before[k].runs, ns: a.ns - before[k].ns}); d.runs > 0 {
				samples[k] = append(samples[k], float64(d.ns)/float64(d.runs))
				runs[k] += d.runs
			}
		}
	}
	per := map[string]float64{}
	for k, v := range samples {
		per[k] = median(v)
	}
	return per, runs, nil
}

// kernelTable: ns per run of each BPF program during an exec storm, the
// median of kernelStorms storms.
func kernelTable(tracers []*tracer, dir string) {
	fmt.Printf("kernel cost per run of each BPF program (bpf_stats), median of %d %d-exec storms, each tracer's own programs:\n", kernelStorms, *n)
	fmt.Printf("%-30s %-16s %10s %10s\n", "tracer", "program", "runs", "ns/run")
	for _, t := range tracers {
		if t.argv == nil || !t.bpf {
			continue
		}
		r, err := start(t, dir)
		if err != nil {
			fatal(fmt.Sprintf("%s: %v", t.name, err))
		}
		per, runs, err := stormMedians(func() (map[string]progStat, error) { return progStats(r.pid()), nil })
		if err != nil {
			fatal(err.Error())
		}
		r.stop()
		names := make([]string, 0, len(per))
		for k := range per {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			fmt.Printf("%-30s %-16s %10d %10.0f\n", t.name, k, runs[k], per[k])
		}
		if _, ok := per["nst_fork"]; ok {
			total := per["nst_fork"] + per["nst_exec"] + per["nst_exit"]
			fmt.Printf("%-30s %-16s %10s %10.0f\n", t.name, "fork+exec+exit", "", total)
			results.kernel = per
		}
		if _, ok := per["nst_sys_enter"]; ok {
			fmt.Printf("%-30s %-16s %10s %10.0f\n", t.name, "per syscall", "", per["nst_sys_enter"]+per["nst_sys_exit"])
		}
	}
	if b, err := exec.Command(*nstrace, "--debug", "-e", "clone", "--duration", "0.05", "-o", os.DevNull).CombinedOutput(); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "namespace system calls") {
				results.hooks = strings.TrimPrefix(line, "nstrace: ")
				fmt.Println(results.hooks)
			}
		}
	}
}

// cpuTable: the tracer's own CPU per event at a steady ~500 execs/s and
// during the storm's rounds (as fast as the storm goes).
func cpuTable(tracers []*tracer, dir, prog string) {
	fmt.Printf("tracer CPU (all its threads, schedstat) per event:\n")
	fmt.Printf("%-30s %14s %14s %12s\n", "tracer", "µs @~500/s", "µs @storm", "storm ev/s")
	d := 4 * time.Second
	if *quick {
		d = 2 * time.Second
	}
	for _, t := range tracers {
		if t.argv == nil {
			continue
		}
		r, err := start(t, dir)
		if err != nil {
			fatal(fmt.Sprintf("%s: %v", t.name, err))
		}
		time.Sleep(200 * time.Millisecond)
		e0, c0 := r.events(), cpuNS(r.pid())
		paced(prog, 500, d)
		time.Sleep(300 * time.Millisecond)
		e1, c1 := r.events(), cpuNS(r.pid())
		r.stop()
		low := perEvent(c1-c0, e1-e0)
		fmt.Printf("%-30s %14s %14s %12s\n", t.name, low, perEvent(t.cpu, t.events), fmt.Sprintf("%.0f", t.rate))
		if strings.HasPrefix(t.name, "nstrace") && t.events > 0 {
			results.cpu = append(results.cpu, namedFigure{t.name, float64(t.cpu) / 1e3 / float64(t.events)})
		}
	}
}

func perEvent(ns uint64, events int) string {
	if events <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(ns)/1e3/float64(events))
}

// syscallTable: system calls per event during a storm, by strace -c.
func syscallTable(tracers []*tracer, dir string) {
	path, err := exec.LookPath("strace")
	if err != nil {
		fmt.Println("system calls per event skipped: strace not installed (apt-get install strace)")
		return
	}
	fmt.Printf("tracer system calls per event during a %d-exec storm (strace -c -f):\n", *n)
	fmt.Printf("%-30s %10s %10s %10s  %s\n", "tracer", "syscalls", "events", "per event", "top calls")
	for _, t := range tracers {
		if t.argv == nil {
			continue
		}
		r, err := start(t, dir)
		if err != nil {
			fatal(fmt.Sprintf("%s: %v", t.name, err))
		}
		st := exec.Command(path, "-c", "-f", "-p", strconv.Itoa(r.pid()))
		var sout bytes.Buffer
		st.Stderr = &sout
		if err := st.Start(); err != nil {
			fatal(err.Error())
		}
		time.Sleep(500 * time.Millisecond)
		e0 := r.events()
		if _, err := storm("/bin/true"); err != nil {
			fatal(err.Error())
		}
		time.Sleep(300 * time.Millisecond)
		e1 := r.events()
		_ = st.Process.Signal(syscall.SIGINT)
		_ = st.Wait()
		r.stop()
		total, top := straceTotals(sout.String())
		per := "-"
		if e1 > e0 {
			per = fmt.Sprintf("%.2f", float64(total)/float64(e1-e0))
		}
		fmt.Printf("%-30s %10d %10d %10s  %s\n", t.name, total, e1-e0, per, top)
	}
}

// straceTotals reads strace -c's table: the total number of calls, and
// the three most frequent.
func straceTotals(s string) (int, string) {
	type row struct {
		name  string
		calls int
	}
	var rows []row
	total := 0
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || strings.HasPrefix(line, "%") || strings.HasPrefix(line, "-") {
			continue
		}
		calls, err := strconv.Atoi(f[3])
		if err != nil {
			continue
		}
		if f[len(f)-1] == "total" {
			total = calls
			continue
		}
		rows = append(rows, row{f[len(f)-1], calls})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].calls > rows[j].calls })
	var top []string
	for i := 0; i < len(rows) && i < 3; i++ {
		top = append(top, fmt.Sprintf("%s %d", rows[i].name, rows[i].calls))
	}
	return total, strings.Join(top, ", ")
}

// idleTable: CPU ticks each tracer uses while nothing is asked of it. The
// tracers idle side by side; the host's own background work still runs.
func idleTable(tracers []*tracer, dir string) {
	d := 20 * time.Second
	if *quick {
		d = 5 * time.Second
	}
	fmt.Printf("idle: CPU ticks (utime+stime, %d a second) over %v, tracers side by side:\n", 100, d)
	fmt.Printf("%-30s %8s %8s\n", "tracer", "ticks", "events")
	var rs []*running
	var ts []*tracer
	for _, t := range tracers {
		if t.argv == nil || !t.idle {
			continue
		}
		r, err := start(t, dir)
		if err != nil {
			fatal(fmt.Sprintf("%s: %v", t.name, err))
		}
		rs, ts = append(rs, r), append(ts, t)
	}
	time.Sleep(500 * time.Millisecond)
	t0 := make([]int64, len(rs))
	e0 := make([]int, len(rs))
	for i, r := range rs {
		t0[i], e0[i] = ticks(r.pid()), r.events()
	}
	time.Sleep(d)
	for i, r := range rs {
		n := ticks(r.pid()) - t0[i]
		fmt.Printf("%-30s %8d %8d\n", ts[i].name, n, r.events()-e0[i])
		if strings.HasPrefix(ts[i].name, "nstrace") {
			results.idle = append(results.idle, namedFigure{ts[i].name, float64(n)})
		}
		r.stop()
	}
	results.idleFor = d
}

// ddTable: a syscall-bound program (4 million one-byte reads and writes)
// bare and under each tracer.
func ddTable(tracers []*tracer, dir string) {
	const count = 2000000
	reps := 3
	if *quick {
		reps = 1
	}
	dd := func() float64 {
		start := time.Now()
		if err := exec.Command("dd", "if=/dev/zero", "of=/dev/null", "bs=1", "count="+strconv.Itoa(count)).Run(); err != nil {
			fatal("dd: " + err.Error())
		}
		return time.Since(start).Seconds()
	}
	fmt.Printf("dd if=/dev/zero of=/dev/null bs=1 count=%d, median of %d:\n", count, reps)
	fmt.Printf("%-30s %9s %9s\n", "tracer", "s", "slowdown")
	var bare float64
	for _, t := range tracers {
		if t.argv != nil && !t.idle {
			continue
		}
		var times []float64
		var r *running
		if t.argv != nil {
			var err error
			if r, err = start(t, dir); err != nil {
				fatal(fmt.Sprintf("%s: %v", t.name, err))
			}
		}
		for i := 0; i < reps; i++ {
			times = append(times, dd())
		}
		if r != nil {
			r.stop()
		}
		m := median(times)
		if t.argv == nil {
			bare = m
			fmt.Printf("%-30s %9.3f %9s\n", t.name, m, "-")
			continue
		}
		fmt.Printf("%-30s %9.3f %8.1f%%\n", t.name, m, 100*(m/bare-1))
	}
}
