// SPDX-License-Identifier: Apache-2.0

package probe_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/probe"
	"github.com/nstrace/nstrace/internal/procfs"
	"github.com/nstrace/nstrace/internal/testutil"
)

// runHelper runs a helper mode to its end and returns its pid and stdout.
func runHelper(t *testing.T, mode string, args ...string) (uint32, string) {
	t.Helper()
	cmd := helperCmd(mode, args...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper %s: %v", mode, err)
	}
	return uint32(cmd.Process.Pid), strings.TrimSpace(string(out))
}

func TestPrivilegedComm(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.Kinds(event.Comm, event.Exec, event.Exit))
	m := marker()
	pid, _ := runHelper(t, "rename", "p"+m, "w"+m)
	c.Wait(t, 1, wait, kindPID(event.Exit, pid))
	c.Settle()
	got := c.Wait(t, 0, 0, kindPID(event.Comm, pid))
	if len(got) != 2 {
		t.Fatalf("want 2 comm events (prctl, /proc write), got %d", len(got))
	}
	// The exec named the process after its file: no comm event for that.
	old := filepath.Base(os.Args[0])
	if len(old) > 15 {
		old = old[:15]
	}
	for i, want := range [][2]string{{old, "p" + m}, {"p" + m, "w" + m}} {
		e := got[i]
		if string(e.Comm) != want[0] || string(e.CommNew) != want[1] || e.TID != pid {
			t.Errorf("comm event %d: %q → %q tid %d, want %q → %q tid %d", i, e.Comm, e.CommNew, e.TID, want[0], want[1], pid)
		}
	}
}

func TestPrivilegedUIDChange(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.Kinds(event.UID, event.Exit))
	pid, _ := runHelper(t, "setresuid", "65534")
	c.Wait(t, 1, wait, kindPID(event.Exit, pid))
	c.Settle()
	got := c.Wait(t, 0, 0, kindPID(event.UID, pid))
	// setresgid, then setresuid; the last call changed nothing.
	if len(got) != 2 {
		t.Fatalf("want 2 uid events, got %d", len(got))
	}
	g, u := got[0], got[1]
	if g.OldGID != 0 || g.GID != 65534 || g.OldEGID != 0 || g.EGID != 65534 || g.UID != 0 || g.Ret != 0 {
		t.Errorf("setresgid: gid %d→%d egid %d→%d uid %d ret %d", g.OldGID, g.GID, g.OldEGID, g.EGID, g.UID, g.Ret)
	}
	if u.OldUID != 0 || u.UID != 65534 || u.OldEUID != 0 || u.EUID != 65534 || u.GID != 65534 || u.Ret != 0 {
		t.Errorf("setresuid: uid %d→%d euid %d→%d gid %d ret %d", u.OldUID, u.UID, u.OldEUID, u.EUID, u.GID, u.Ret)
	}
}

func TestPrivilegedSetsid(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.Kinds(event.SID, event.Exit))
	pid, out := runHelper(t, "setsid")
	c.Wait(t, 1, wait, kindPID(event.Exit, pid))
	got := c.Wait(t, 1, wait, kindPID(event.SID, pid))
	if got[0].Ret != int64(pid) || out != strconv.Itoa(int(pid)) {
		t.Errorf("setsid event ret %d, helper says %s, pid %d", got[0].Ret, out, pid)
	}
}

func TestPrivilegedPtrace(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.Kinds(event.Ptrace, event.Exit))
	pid, out := runHelper(t, "ptrace")
	tracee, _ := strconv.Atoi(out)
	c.Wait(t, 1, wait, kindPID(event.Exit, pid))
	c.Settle()
	got := c.Wait(t, 0, 0, kindPID(event.Ptrace, pid))
	if len(got) != 2 {
		t.Fatalf("want attach and detach, got %d ptrace events", len(got))
	}
	for i, req := range []uint64{syscall.PTRACE_ATTACH, syscall.PTRACE_DETACH} {
		e := got[i]
		if e.FlagsRaw != req || e.TargetPID != uint32(tracee) || e.Ret != 0 {
			t.Errorf("ptrace event %d: request %d pid %d ret %d, want %d pid %d ret 0", i, e.FlagsRaw, e.TargetPID, e.Ret, req, tracee)
		}
	}
}

func TestPrivilegedCoreDump(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.Kinds(event.Exit))
	cmd := exec.Command("sh", "-c", "ulimit -c unlimited; kill -SEGV $$")
	cmd.Dir = t.TempDir()
	_ = cmd.Run()
	pid := uint32(cmd.Process.Pid)
	e := c.Wait(t, 1, wait, kindPID(event.Exit, pid))[0]
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.CoreDump() {
		t.Fatalf("the shell dumped no core (core_pattern?): %v", ws)
	}
	if !e.CoreDumped || e.Signal != int(syscall.SIGSEGV) {
		t.Errorf("exit: signal %d core %v, want SIGSEGV with core", e.Signal, e.CoreDumped)
	}
}

func TestPrivilegedFailedExecs(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.CollectWith(t, probe.Options{Kinds: event.Kinds(event.Exec, event.Exit), Failed: true})
	dir := t.TempDir()
	bad := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(bad, []byte("nothing"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file string
		ret  int64
	}{{bad, -int64(syscall.EACCES)}, {filepath.Join(dir, "missing"), -int64(syscall.ENOENT)}} {
		cmd := helperCmd("failed-exec", tc.file)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("helper: %v: %s", err, out)
		}
		pid := uint32(cmd.Process.Pid)
		c.Wait(t, 1, wait, kindPID(event.Exit, pid))
		c.Settle()
		var failed, ok int
		for _, e := range c.Wait(t, 0, 0, kindPID(event.Exec, pid)) {
			switch {
			case e.Ret == 0 && string(e.Filename) == os.Args[0]:
				ok++
			case e.Ret == tc.ret && string(e.Filename) == tc.file:
				failed++
			default:
				t.Errorf("unexpected exec event: %q ret %d", e.Filename, e.Ret)
			}
		}
		if ok != 1 || failed != 1 {
			t.Errorf("%s: %d successful and %d failed execs, want 1 and 1 (ret %d)", tc.file, ok, failed, tc.ret)
		}
	}
}

// Four processes deep inside a new pid namespace: the exec at the bottom
// carries its ancestors, each with its host pid, its pid as its own
// namespace sees it, and the hop out of the namespace.
func TestPrivilegedAncestors(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.CollectWith(t, probe.Options{Kinds: event.Kinds(event.Exec), Ancestors: true})
	m := marker()
	// "; true" keeps each shell from exec'ing its last command.
	cmd := start(t, exec.Command("unshare", "--fork", "--kill-child", "--pid", "--mount-proc",
		"sh", "-c", `sh -c "sh -c \"sleep `+m+`; true\"; true"; true`))
	e := c.Wait(t, 1, wait, isExec("sleep", m))[0]
	if e.NSPID != 4 {
		t.Errorf("sleep has nspid %d, want 4", e.NSPID)
	}
	if len(e.Ancestors) < 5 {
		t.Fatalf("%d ancestors, want at least 5", len(e.Ancestors))
	}
	inner := e.NS[ns.Pid]
	pid := e.PPID
	for i, a := range e.Ancestors[:4] {
		if a.PID != pid {
			t.Errorf("ancestor %d: pid %d, want %d", i, a.PID, pid)
		}
		want := uint32(3 - i)
		inNS := a.PidNS == inner
		switch {
		case i < 3 && (!inNS || a.NSPID != want || string(a.Comm) != "sh"):
			t.Errorf("ancestor %d: %s nspid %d ns %d, want sh nspid %d ns %d", i, a.Comm, a.NSPID, a.PidNS, want, inner)
		case i == 3 && (inNS || a.PID != uint32(cmd.Process.Pid) || string(a.Comm) != "unshare"):
			t.Errorf("ancestor 3: %s pid %d ns %d, want unshare %d outside %d", a.Comm, a.PID, a.PidNS, cmd.Process.Pid, inner)
		}
		p, ok := procfs.ReadProc(procfs.Root, a.PID)
		if !ok {
			t.Fatalf("ancestor %d (pid %d) is gone", i, a.PID)
		}
		pid = p.PPID
		if p.NSPID != a.NSPID || p.NS[ns.Pid] != a.PidNS {
			t.Errorf("ancestor %d: nspid %d pid ns %d, /proc says %d and %d", i, a.NSPID, a.PidNS, p.NSPID, p.NS[ns.Pid])
		}
	}
}
