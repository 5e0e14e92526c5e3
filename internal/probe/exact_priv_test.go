// SPDX-License-Identifier: Apache-2.0

package probe_test

import (
	"bufio"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/probe"
	"github.com/nstrace/nstrace/internal/testutil"
)

// exitVariants are the ways this kernel can tell a process's last
// thread: the tracepoint's group_dead where it has it, and the claim
// kernels before 6.16 need, which runs everywhere.
func exitVariants(t *testing.T) map[string]bool {
	t.Helper()
	c := testutil.Collect(t, event.Kinds(event.Exit))
	variants := map[string]bool{"claim": true}
	if c.Probe().ExitHook() == "sched_process_exit (group_dead)" {
		variants["group_dead"] = false
	}
	return variants
}

func TestPrivilegedRacingExitsOncePerProcess(t *testing.T) {
	testutil.RequirePrivileged(t)
	const runs = 600
	for name, claim := range exitVariants(t) {
		t.Run(name, func(t *testing.T) {
			// Only this test's own descendants: on a busy host pids wrap
			// around within the run, and another process's exit under a
			// helper's pid is not the helper's.
			c := testutil.CollectWith(t, probe.Options{Kinds: event.Kinds(event.Exit), ClaimExits: claim,
				Filter: probe.Filter{Tracked: true, PIDs: []uint32{uint32(os.Getpid())}, Follow: true}})
			// Two workers at once: threads of different processes and
			// of one process race on both CPUs. A pid may come back
			// within the run, so each pid keeps the statuses of all the
			// helpers that had it.
			status := map[uint32][]int{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < runs/2; i++ {
						mode := "exit-race"
						if i%3 == 2 {
							mode = "leader-first"
						}
						cmd := helperCmd(mode, strconv.Itoa(3+i%5))
						_ = cmd.Run()
						if cmd.ProcessState == nil {
							t.Errorf("%s did not run", mode)
							return
						}
						mu.Lock()
						pid := uint32(cmd.Process.Pid)
						status[pid] = append(status[pid], waitCode(cmd.ProcessState.Sys().(syscall.WaitStatus)))
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			mine := func(e *event.Event) bool {
				mu.Lock()
				defer mu.Unlock()
				_, ok := status[e.PID]
				return e.Kind == event.Exit && ok
			}
			c.Wait(t, runs, wait, mine)
			c.Settle()
			got := map[uint32][]int{}
			n := 0
			for _, e := range c.Wait(t, runs, 0, mine) {
				got[e.PID] = append(got[e.PID], e.ExitCode<<8|e.Signal)
				n++
			}
			for pid, want := range status {
				g := got[pid]
				slices.Sort(g)
				slices.Sort(want)
				if !slices.Equal(g, want) {
					t.Errorf("pid %d: exits reported %v, wait(2) gave %v (code<<8|signal)", pid, g, want)
				}
			}
			if n != runs {
				t.Errorf("%d exits reported, %d processes ran", n, runs)
			}
			losses, _ := c.Probe().Losses()
			if losses.Total() != 0 {
				t.Errorf("losses %v", losses)
			}
		})
	}
}

// startHelper starts a helper that waits for a line on stdin, and
// returns its pid and a function that lets it go and waits for it.
func startHelper(t *testing.T, mode string, args ...string) (uint32, func()) {
	t.Helper()
	cmd := helperCmd(mode, args...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	start(t, cmd)
	return uint32(cmd.Process.Pid), func() {
		_, _ = io.WriteString(in, "go\n")
		in.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
	}
}

// fullTables are the ways the tests fill a kernel table: made tiny and
// overrun by threads calling at once (how often depends on timing), and
// full from the start (every call finds it full).
var fullTables = []struct {
	name   string
	limits func(size int) probe.Limits
	all    bool // every call is lost
}{
	{"overrun", func(n int) probe.Limits { return probe.Limits{Pending: n, CloneFlags: n} }, false},
	{"full", func(n int) probe.Limits { return probe.Limits{Pending: n, CloneFlags: n, Full: true} }, true},
}

func TestPrivilegedPendingFullIsCounted(t *testing.T) {
	testutil.RequirePrivileged(t)
	const threads, calls = 8, 400
	for _, hooks := range testutil.HookPaths(t) {
		for _, ft := range fullTables {
			t.Run(string(hooks)+"/"+ft.name, func(t *testing.T) {
				pid, run := startHelper(t, "unshare-threads", strconv.Itoa(threads), strconv.Itoa(calls))
				c := testutil.CollectWith(t, probe.Options{
					Kinds: event.Kinds(event.Unshare), Hooks: hooks, Limits: ft.limits(1),
					Filter: probe.Filter{Tracked: true, PIDs: []uint32{pid}},
				})
				run()
				c.Settle()
				reported := len(c.Wait(t, 0, 0, kindPID(event.Unshare, pid)))
				losses, _ := c.Probe().Losses()
				t.Logf("%d calls: %d reported, %d lost (pending full)", threads*calls, reported, losses[event.LostPending])
				if uint64(reported)+losses.Total() != threads*calls || losses.Total() != losses[event.LostPending] {
					t.Errorf("reported %d + lost %v != %d calls", reported, losses, threads*calls)
				}
				if ft.all && reported != 0 {
					t.Errorf("%d calls reported past a full table", reported)
				}
			})
		}
	}
}

func TestPrivilegedCloneFlagsFullIsCounted(t *testing.T) {
	testutil.RequirePrivileged(t)
	const threads, calls = 8, 150
	for _, hooks := range testutil.HookPaths(t) {
		for _, ft := range fullTables {
			t.Run(string(hooks)+"/"+ft.name, func(t *testing.T) {
				pid, run := startHelper(t, "clone-threads", strconv.Itoa(threads), strconv.Itoa(calls))
				c := testutil.CollectWith(t, probe.Options{
					Kinds: event.Kinds(event.Clone, event.Fork), Hooks: hooks, Limits: ft.limits(1),
					Filter: probe.Filter{Tracked: true, PIDs: []uint32{pid}},
				})
				run()
				c.Settle()
				var clones, forks, failed int
				for _, e := range c.Events() {
					switch {
					case e.PID != pid:
					case e.Kind == event.Clone && e.Ret < 0:
						failed++
					case e.Kind == event.Clone:
						clones++
					case e.Kind == event.Fork:
						forks++
					}
				}
				losses, _ := c.Probe().Losses()
				t.Logf("%d clones: %d reported as clone, %d as fork (clone flags full: %d), %d failed", threads*calls, clones, forks, losses[event.LostCloneFlags], failed)
				// Every birth is there, as a clone or, when its flags could
				// not be noted, as a fork counted lost; a call the kernel
				// restarts (a signal came in) is neither.
				if uint64(forks) != losses[event.LostCloneFlags] || clones+forks != threads*calls || failed != 0 {
					t.Errorf("clones %d + forks %d (%d failed), lost %v; want %d births, forks = clone flags lost", clones, forks, failed, losses, threads*calls)
				}
				if ft.all && clones != 0 {
					t.Errorf("%d clones reported with flags past a full table", clones)
				}
			})
		}
	}
}

func TestPrivilegedTrackedFullIsCounted(t *testing.T) {
	testutil.RequirePrivileged(t)
	// Room for the helper and three of its ten children.
	const children, room = 10, 4
	cmd := helperCmd("children", strconv.Itoa(children))
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start(t, cmd)
	pid := uint32(cmd.Process.Pid)
	c := testutil.CollectWith(t, probe.Options{
		Kinds: event.Kinds(event.Fork, event.Exit), Limits: probe.Limits{Tracked: room},
		Filter: probe.Filter{Tracked: true, PIDs: []uint32{pid}, Follow: true},
	})
	if _, err := io.WriteString(in, "go\n"); err != nil {
		t.Fatal(err)
	}
	// The helper names its children: the Go runtime forks a probe
	// child of its own, which is no child of the test's.
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	named := map[uint32]bool{}
	for _, f := range strings.Fields(line)[1:] {
		n, _ := strconv.Atoi(f)
		named[uint32(n)] = true
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	c.Wait(t, 1, wait, kindPID(event.Exit, pid))
	c.Settle()
	kids := map[uint32]bool{}
	untracked := map[uint32]bool{}
	exited := map[uint32]bool{}
	for _, e := range c.Events() {
		switch {
		case e.Kind == event.Fork && e.PID == pid && named[e.ChildPID]:
			kids[e.ChildPID] = true
		case e.Kind == event.Lost && e.Reason == event.LostTracked:
			if e.PID != pid {
				t.Errorf("untracked child %d of %d, want parent %d", e.ChildPID, e.PID, pid)
			}
			untracked[e.ChildPID] = true
		case e.Kind == event.Exit && e.PID != pid:
			exited[e.PID] = true
		}
	}
	losses, _ := c.Probe().Losses()
	t.Logf("%d children: %d followed to their exit, %d not followed (traced set full: %d)", len(kids), len(exited), len(untracked), losses[event.LostTracked])
	if len(kids) != children || len(untracked) != children-(room-1) || uint64(len(untracked)) != losses[event.LostTracked] || len(named) != children {
		t.Errorf("forks %d, untracked %d, losses %v", len(kids), len(untracked), losses)
	}
	for k := range kids {
		if exited[k] == untracked[k] {
			t.Errorf("child %d: exit reported %v, untracked %v: want exactly one", k, exited[k], untracked[k])
		}
	}
}

// waitCode is a wait status as code<<8|signal, the form the test compares.
func waitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return int(ws.Signal())
	}
	return ws.ExitStatus() << 8
}
