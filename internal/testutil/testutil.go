// SPDX-License-Identifier: Apache-2.0

// Package testutil holds helpers for nstrace's privileged tests: the gate
// that keeps them from passing by skipping, and a collector of live events.
package testutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/probe"
)

// PrivilegedEnv opts in to the privileged tests; `make test` sets it as root.
const PrivilegedEnv = "NSTRACE_PRIVILEGED_TESTS"

// RequirePrivileged skips t unless privileged tests were asked for, and
// fails it if they were asked for but cannot run: so a run that opted in
// never passes by skipping.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if os.Getenv(PrivilegedEnv) != "1" {
		t.Skipf("privileged test: run as root with %s=1 (make test does)", PrivilegedEnv)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s=1 but not running as root", PrivilegedEnv)
	}
}

// Eventually reports whether cond comes to hold within timeout, asked
// at once and then every interval.
func Eventually(timeout, every time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(every) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// Collector reads events from a live probe in the background.
type Collector struct {
	p    *probe.Probe
	mu   sync.Mutex
	evs  []*event.Event
	done chan struct{}
	err  error
}

// Collect opens a probe for kinds and starts reading. It is closed when
// the test ends.
func Collect(t testing.TB, kinds event.KindSet) *Collector {
	t.Helper()
	return CollectWith(t, probe.Options{Kinds: kinds})
}

// CollectWith is Collect with full options. Hooks left to nstrace's
// choice become those HooksEnv asks for.
func CollectWith(t testing.TB, opts probe.Options) *Collector {
	t.Helper()
	if opts.Hooks == probe.HooksAuto {
		opts.Hooks = Hooks(t)
	}
	// The kernel marks the threads that exist when the first program
	// attaches to the syscall tracepoints; a thread being cloned at that
	// moment can miss the mark, and so can everything it forks. The
	// test's processes are forked from this goroutine's thread, which is
	// older than the attach, from here to the test's end.
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	p, err := probe.Open(opts)
	if err != nil {
		t.Fatalf("opening probe: %v", err)
	}
	c := &Collector{p: p, done: make(chan struct{})}
	go c.loop()
	t.Cleanup(func() {
		_ = p.Interrupt()
		<-c.done
		_ = p.Close()
	})
	return c
}

func (c *Collector) loop() {
	defer close(c.done)
	var e event.Event
	for {
		err := c.p.Next(&e)
		if errors.Is(err, probe.ErrEmpty) {
			err = c.p.Read(&e)
		}
		if err != nil {
			if !errors.Is(err, probe.ErrClosed) {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
			return
		}
		c.mu.Lock()
		c.evs = append(c.evs, e.Clone())
		c.mu.Unlock()
	}
}

// Events returns a snapshot of what has arrived so far.
func (c *Collector) Events() []*event.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*event.Event(nil), c.evs...)
}

// Wait returns the events matching match once there are at least n of
// them, or fails t after timeout.
func (c *Collector) Wait(t testing.TB, n int, timeout time.Duration, match func(*event.Event) bool) []*event.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var out []*event.Event
		for _, e := range c.Events() {
			if match(e) {
				out = append(out, e)
			}
		}
		if len(out) >= n {
			return out
		}
		c.mu.Lock()
		err := c.err
		c.mu.Unlock()
		if err != nil {
			t.Fatalf("reading events: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %d matching events, have %d; %s", timeout, n, len(out), c.summary())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// summary says what did arrive, for a failure's message: how many
// events, the losses the kernel side counted, and the last execs.
func (c *Collector) summary() string {
	evs := c.Events()
	var execs []string
	for i := len(evs) - 1; i >= 0 && len(execs) < 5; i-- {
		if e := evs[i]; e.Kind == event.Exec {
			execs = append(execs, fmt.Sprintf("%d %q %q", e.PID, e.Comm, e.Args))
		}
	}
	lost, _ := c.p.Losses()
	return fmt.Sprintf("%d events in all, %d queued unread, lost %v, last execs (newest first) %v", len(evs), c.p.Pending(), lost, execs)
}

// Settle waits until every event queued now has been read.
func (c *Collector) Settle() {
	for deadline := time.Now().Add(2 * time.Second); c.p.Pending() > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
}

// Probe is the collector's probe.
func (c *Collector) Probe() *probe.Probe { return c.p }

// LoadedPrograms lists the ids of loaded BPF programs with nstrace's
// names (nst_...).
func LoadedPrograms() map[ebpf.ProgramID]string {
	out := map[ebpf.ProgramID]string{}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return out
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, err := p.Info()
		p.Close()
		if err == nil && strings.HasPrefix(info.Name, "nst_") {
			out[id] = info.Name
		}
	}
}

// ProgramsSince names the nstrace programs this process loaded since
// before was listed (LoadedPrograms). Programs other processes load
// meanwhile (other test packages run at the same time) are not counted.
func ProgramsSince(before map[ebpf.ProgramID]string) map[string]bool {
	own := heldPrograms(func(pid int) bool { return pid == os.Getpid() })
	progs := map[string]bool{}
	for id, name := range LoadedPrograms() {
		if _, old := before[id]; !old && own[id] {
			progs[name] = true
		}
	}
	return progs
}

// testProcessEnv marks every process this test binary starts, and theirs,
// orphans included: their environment carries this process's pid.
const testProcessEnv = "NSTRACE_TEST_PROCESS"

// testOwner is the test binary whose processes these are: this one, or
// the one that started this one (nstrace run as the test binary).
var testOwner = os.Getenv(testProcessEnv)

func init() {
	if testOwner == "" {
		testOwner = strconv.Itoa(os.Getpid())
		_ = os.Setenv(testProcessEnv, testOwner)
	}
}

// ours reports whether process pid was started by this test binary: a
// descendant, or an orphan of one, which keeps the environment.
func ours(pid int) bool {
	if descends(pid, os.Getpid()) {
		return true
	}
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	mark := testProcessEnv + "=" + testOwner
	for _, kv := range strings.Split(string(env), "\x00") {
		if kv == mark {
			return true
		}
	}
	return false
}

// WaitProgramsGone fails t unless every nstrace program loaded since
// before was listed is gone within 5 seconds, but for those held by
// processes this test binary did not start: other test packages, run at
// the same time, load programs of their own.
func WaitProgramsGone(t testing.TB, before map[ebpf.ProgramID]string) {
	t.Helper()
	var left map[ebpf.ProgramID]string
	if !Eventually(5*time.Second, 50*time.Millisecond, func() bool {
		others := heldPrograms(func(pid int) bool { return !ours(pid) })
		left = map[ebpf.ProgramID]string{}
		for id, name := range LoadedPrograms() {
			if _, old := before[id]; !old && !others[id] {
				left[id] = name
			}
		}
		return len(left) == 0
	}) {
		t.Fatalf("programs left in the kernel: %v", left)
	}
}

// heldPrograms lists the BPF programs that processes chosen by which hold
// through a program or link fd: what keeps a program in the kernel.
func heldPrograms(which func(pid int) bool) map[ebpf.ProgramID]bool {
	held := map[ebpf.ProgramID]bool{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || !which(pid) {
			continue
		}
		infos, _ := filepath.Glob("/proc/" + d.Name() + "/fdinfo/*")
		for _, path := range infos {
			b, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "prog_id:"); ok {
					if id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil {
						held[ebpf.ProgramID(id)] = true
					}
				}
			}
		}
	}
	return held
}

// descends reports whether process pid is ancestor or one of its
// descendants.
func descends(pid, ancestor int) bool {
	for i := 0; pid > 1 && i < 64; i++ {
		if pid == ancestor {
			return true
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return false
		}
		// The parent is the second field after the command's closing ")".
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 2 {
			return false
		}
		if pid, err = strconv.Atoi(f[1]); err != nil {
			return false
		}
	}
	return pid == ancestor
}

// HooksEnv makes the privileged tests catch namespace system calls one
// way, "fentry" or "tracepoint", as asked for, never falling back: the
// kernel matrix runs the suite once per way. Unset, nstrace chooses.
const HooksEnv = "NSTRACE_SYSCALL_HOOKS"

// Hooks is the hook path HooksEnv asks for, or probe.HooksAuto.
func Hooks(t testing.TB) probe.Hooks {
	t.Helper()
	switch h := probe.Hooks(os.Getenv(HooksEnv)); h {
	case probe.HooksAuto, probe.HooksFentry, probe.HooksTracepoint:
		return h
	default:
		t.Fatalf("%s=%q: want fentry or tracepoint", HooksEnv, h)
		return h
	}
}

// HookPaths lists the ways this kernel lets nstrace catch namespace
// system calls: the raw syscall tracepoints always, fentry where BPF
// trampolines load; only the one HooksEnv asks for if set. Tests of
// those calls run once for each.
func HookPaths(t testing.TB) []probe.Hooks {
	t.Helper()
	if h := Hooks(t); h != probe.HooksAuto {
		return []probe.Hooks{h}
	}
	paths := []probe.Hooks{probe.HooksTracepoint}
	if probe.FentryAllowed() == nil {
		paths = append(paths, probe.HooksFentry)
	}
	return paths
}
