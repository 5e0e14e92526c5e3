// SPDX-License-Identifier: Apache-2.0

package probe_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/probe"
	"github.com/nstrace/nstrace/internal/procfs"
	"github.com/nstrace/nstrace/internal/testutil"
)

const wait = 10 * time.Second

// marker is a unique sleep duration: it names one test's process in a
// host-wide feed.
func marker() string { return fmt.Sprintf("%d.%06d", 1000+rand.IntN(1000), rand.IntN(1000000)) }

func isExec(args ...string) func(*event.Event) bool {
	return func(e *event.Event) bool {
		if e.Kind != event.Exec || len(e.Args) != len(args) {
			return false
		}
		for i, a := range args {
			if string(e.Args[i]) != a {
				return false
			}
		}
		return true
	}
}

func kindPID(k event.Kind, pid uint32) func(*event.Event) bool {
	return func(e *event.Event) bool { return e.Kind == k && e.PID == pid }
}

func start(t *testing.T, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// waitExeced waits up to a minute for process pid's command line to be
// cmdline (NUL-terminated arguments): its exec has happened.
func waitExeced(t *testing.T, pid uint32, cmdline string) {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/cmdline", pid)
	if !testutil.Eventually(time.Minute, 10*time.Millisecond, func() bool {
		b, _ := os.ReadFile(path)
		return string(b) == cmdline
	}) {
		b, _ := os.ReadFile(path)
		t.Fatalf("process %d did not exec in a minute: its command line is %q", pid, b)
	}
}

func procNS(t *testing.T, pid uint32) ns.Set {
	t.Helper()
	set, err := procfs.ReadPIDNS(procfs.Root, pid)
	if err != nil {
		t.Fatal(err)
	}
	for typ, v := range set {
		if v == 0 {
			t.Fatalf("/proc/%d/ns/%s unreadable", pid, ns.Type(typ))
		}
	}
	return set
}

func assertNS(t *testing.T, what string, got, want ns.Set) {
	t.Helper()
	for typ := ns.Type(0); typ < ns.Count; typ++ {
		if got[typ] != want[typ] {
			t.Errorf("%s: ns %s = %d, /proc says %d", what, typ, got[typ], want[typ])
		}
	}
}

func TestPrivilegedAllProgramsLoad(t *testing.T) {
	testutil.RequirePrivileged(t)
	// Every program of every kind, through the verifier and attached.
	testutil.Collect(t, event.AllKinds())
}

func TestPrivilegedExecForkExitInNewNamespaces(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.AllKinds())
	m := marker()
	cmd := start(t, exec.Command("unshare", "--fork", "--kill-child", "--pid", "--mount-proc", "--net", "--uts", "--ipc", "--mount", "sleep", m))
	upid := uint32(cmd.Process.Pid)

	ex := c.Wait(t, 1, wait, isExec("sleep", m))[0]
	sleepPID := ex.PID
	want := procNS(t, sleepPID)
	assertNS(t, "exec", ex.NS, want)
	host := procNS(t, uint32(os.Getpid()))
	for _, typ := range []ns.Type{ns.Pid, ns.Net, ns.UTS, ns.IPC, ns.Mnt} {
		if want[typ] == host[typ] {
			t.Errorf("sleep shares the host's %s namespace; the test needs a fresh one", typ)
		}
	}
	proc, ok := procfs.ReadProc(procfs.Root, sleepPID)
	if !ok {
		t.Fatalf("process %d is gone", sleepPID)
	}
	nspid := proc.NSPID
	if ex.NSPID != nspid || nspid != 1 {
		t.Errorf("exec nspid = %d, /proc NSpid = %d, want 1", ex.NSPID, nspid)
	}
	if ex.PPID != upid || ex.TID != sleepPID || string(ex.Comm) != "sleep" {
		t.Errorf("exec pid/tid/ppid/comm = %d/%d/%d/%q, want %d/%d/%d/sleep", ex.PID, ex.TID, ex.PPID, ex.Comm, sleepPID, sleepPID, upid)
	}
	if !filepath.IsAbs(string(ex.Filename)) || filepath.Base(string(ex.Filename)) != "sleep" || ex.ArgsTruncated {
		t.Errorf("exec filename %q truncated=%v", ex.Filename, ex.ArgsTruncated)
	}
	if ex.CgroupID == 0 {
		t.Error("exec without a cgroup id")
	}

	// The unshare process forked the sleep into the new pid namespace.
	fk := c.Wait(t, 1, wait, func(e *event.Event) bool { return e.Kind == event.Fork && e.ChildPID == sleepPID })[0]
	if fk.PID != upid || fk.ChildNSPID != 1 {
		t.Errorf("fork pid=%d child_nspid=%d, want %d and 1", fk.PID, fk.ChildNSPID, upid)
	}
	assertNS(t, "fork child", fk.ChildNS, want)
	if !fk.NewNS().Has(ns.Pid) {
		t.Errorf("fork new namespaces %v lack pid", fk.NewNS().Types())
	}

	// Death by signal, reported once, with its lifetime.
	if err := syscall.Kill(int(sleepPID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ee := c.Wait(t, 1, wait, kindPID(event.Exit, sleepPID))
	c.Settle()
	if got := c.Wait(t, 1, 0, kindPID(event.Exit, sleepPID)); len(got) != 1 {
		t.Errorf("%d exit events for one process", len(got))
	}
	if ee[0].Signal != int(syscall.SIGKILL) || ee[0].ExitCode != 0 || ee[0].Duration <= 0 || ee[0].NSPID != 1 {
		t.Errorf("exit signal=%d code=%d duration=%v nspid=%d", ee[0].Signal, ee[0].ExitCode, ee[0].Duration, ee[0].NSPID)
	}
	assertNS(t, "exit", ee[0].NS, want)
}

// A process in the host's namespaces takes the programs' shortcut (its
// task points at the initial nsproxy): what it reports must be what
// /proc says, for the exec, the fork of a child and both exits.
func TestPrivilegedHostNamespacesShortcut(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.AllKinds())
	m := marker()
	cmd := start(t, exec.Command("sh", "-c", "sleep "+m+" & wait", m))
	shPID := uint32(cmd.Process.Pid)
	ex := c.Wait(t, 1, wait, isExec("sleep", m))[0]
	sleepPID := ex.PID
	want := procNS(t, sleepPID)
	assertNS(t, "exec", ex.NS, want)
	assertNS(t, "the test's own", want, procNS(t, uint32(os.Getpid())))
	if ex.NSPID != sleepPID {
		t.Errorf("exec nspid %d, want the host pid %d", ex.NSPID, sleepPID)
	}
	fk := c.Wait(t, 1, wait, func(e *event.Event) bool { return e.Kind == event.Fork && e.ChildPID == sleepPID })[0]
	assertNS(t, "fork", fk.NS, procNS(t, shPID))
	assertNS(t, "fork child", fk.ChildNS, want)
	if fk.PID != shPID || fk.NSPID != shPID || fk.ChildNSPID != sleepPID || len(fk.NewNS().Types()) != 0 {
		t.Errorf("fork pid/nspid %d/%d child nspid %d new %v, want %d/%d, %d, none", fk.PID, fk.NSPID, fk.ChildNSPID, fk.NewNS().Types(), shPID, shPID, sleepPID)
	}
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", sleepPID))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(int(sleepPID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []uint32{sleepPID, shPID} {
		ee := c.Wait(t, 1, wait, kindPID(event.Exit, pid))[0]
		assertNS(t, "exit", ee.NS, want)
		if ee.NSPID != pid || ee.CgroupID != ex.CgroupID {
			t.Errorf("exit of %d: nspid %d cgroup id %d, want %d and the exec's %d", pid, ee.NSPID, ee.CgroupID, pid, ex.CgroupID)
		}
	}
	// The cgroup id is the inode of the process's cgroup v2 directory.
	mount, ok := procfs.Cgroup2Mount(procfs.Root + "/self/mountinfo")
	if !ok {
		t.Fatal("no cgroup v2 mount")
	}
	for _, line := range strings.Split(string(cg), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(mount, path), &st); err != nil {
				t.Fatal(err)
			}
			if ex.CgroupID != st.Ino {
				t.Errorf("exec cgroup id %d, %s has inode %d", ex.CgroupID, path, st.Ino)
			}
			return
		}
	}
	t.Errorf("no cgroup v2 line in /proc/%d/cgroup: %q", sleepPID, cg)
}

func TestPrivilegedExitCodeAndForkPairs(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.AllKinds())
	m := marker()
	cmd := exec.Command("sh", "-c", "/bin/echo "+m+" >/dev/null; exit 7")
	before := time.Now()
	err := cmd.Run()
	after := time.Now()
	if cmd.ProcessState.ExitCode() != 7 {
		t.Fatalf("sh: %v", err)
	}
	shPID := uint32(cmd.Process.Pid)
	ex := c.Wait(t, 1, wait, isExec("/bin/echo", m))[0]
	fk := c.Wait(t, 1, wait, func(e *event.Event) bool { return e.Kind == event.Fork && e.ChildPID == ex.PID })[0]
	if fk.PID != shPID || ex.PPID != shPID || fk.ChildNSPID != ex.PID {
		t.Errorf("fork %d→%d (nspid %d), exec ppid %d; want parent %d", fk.PID, fk.ChildPID, fk.ChildNSPID, ex.PPID, shPID)
	}
	if fk.NewNS() != 0 {
		t.Errorf("plain fork reports new namespaces %v", fk.NewNS().Types())
	}
	ee := c.Wait(t, 1, wait, kindPID(event.Exit, shPID))[0]
	if ee.ExitCode != 7 || ee.Signal != 0 || ee.CoreDumped {
		t.Errorf("exit code %d signal %d core %v, want 7 0 false", ee.ExitCode, ee.Signal, ee.CoreDumped)
	}
	echoExit := c.Wait(t, 1, wait, kindPID(event.Exit, ex.PID))[0]
	if echoExit.ExitCode != 0 || string(echoExit.Comm) != "echo" {
		t.Errorf("echo exit %d comm %q", echoExit.ExitCode, echoExit.Comm)
	}

	// Each event happened while sh ran, in the order they came about.
	// (The wall clock is the boot clock plus an offset taken to within
	// microseconds: a millisecond either side is room enough.)
	const slack = time.Millisecond
	seq := []*event.Event{fk, ex, echoExit, ee}
	for i, e := range seq {
		if e.Time.Before(before.Add(-slack)) || e.Time.After(after.Add(slack)) {
			t.Errorf("%s of %d at %s, outside the run %s to %s", e.Kind, e.PID,
				e.Time.Format(time.StampMicro), before.Format(time.StampMicro), after.Format(time.StampMicro))
		}
		if i > 0 && e.Time.Before(seq[i-1].Time) {
			t.Errorf("%s of %d at %s, before the %s at %s", e.Kind, e.PID, e.Time.Format(time.StampMicro),
				seq[i-1].Kind, seq[i-1].Time.Format(time.StampMicro))
		}
	}
	// A fork's time is the child's birth, from which its exit counts its
	// lifetime: the two agree.
	if d := echoExit.Time.Sub(fk.Time) - echoExit.Duration; d < -slack || d > slack {
		t.Errorf("echo forked at %s, exited at %s after %s: off by %s", fk.Time.Format(time.StampMicro),
			echoExit.Time.Format(time.StampMicro), echoExit.Duration, d)
	}
}

func TestPrivilegedExecFromThread(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.KindSet(0).Add(event.Exec))
	m := marker()
	cmd := helperCmd("thread-exec", m)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	ex := c.Wait(t, 1, wait, isExec("true", m))[0]
	if ex.PID != uint32(cmd.Process.Pid) || ex.TID != ex.PID {
		t.Errorf("exec from a thread: pid %d tid %d, want %d for both", ex.PID, ex.TID, cmd.Process.Pid)
	}
	if string(ex.Filename) != "/bin/true" {
		t.Errorf("filename %q", ex.Filename)
	}
}

func TestPrivilegedFailedExecIsNotReported(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.AllKinds())
	bad := filepath.Join(t.TempDir(), "not-executable")
	if err := os.WriteFile(bad, []byte("nothing"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := helperCmd("failed-exec", bad)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	pid := uint32(cmd.Process.Pid)
	c.Wait(t, 1, wait, kindPID(event.Exit, pid))
	c.Settle()
	execs := c.Wait(t, 0, 0, kindPID(event.Exec, pid))
	if len(execs) != 1 || string(execs[0].Filename) != os.Args[0] {
		t.Errorf("want only the helper's own exec, got %d exec events", len(execs))
	}
	for _, e := range execs {
		if string(e.Filename) == bad {
			t.Errorf("a failed exec of %s was reported", bad)
		}
	}
}

// An exec whose file name and arguments each take under 128 bytes is
// built in place in the ring buffer, any other on the exec heap: both
// sides of each bound come out whole.
func TestPrivilegedExecRecordBounds(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.KindSet(0).Add(event.Exec))
	dir := t.TempDir()
	// The test binary as a helper that exits at once: argv[0] is free.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, nameLen := range []int{126, 127, 128, 200} {
		// The file name the kernel has is the path as given.
		name := filepath.Join(dir, "t")
		name += strings.Repeat("x", nameLen-len(name))
		if err := os.Symlink(self, name); err != nil {
			t.Fatal(err)
		}
		for _, argsLen := range []int{127, 128, 129, 300} {
			// argv: "t", the marker, and padding to argsLen bytes with
			// their NULs.
			m := marker()
			args := []string{"t", m, strings.Repeat("a", argsLen-2-(len(m)+1)-1)}
			cmd := helperCmd("exit")
			cmd.Path, cmd.Args = name, args
			if err := cmd.Run(); err != nil {
				t.Fatal(err)
			}
			ex := c.Wait(t, 1, wait, func(e *event.Event) bool {
				return e.Kind == event.Exec && len(e.Args) > 1 && string(e.Args[1]) == m
			})[0]
			if string(ex.Filename) != name || ex.FilenameTruncated || ex.ArgsTruncated {
				t.Errorf("name %d bytes, args %d: filename %q (truncated %v), args truncated %v", nameLen, argsLen, ex.Filename, ex.FilenameTruncated, ex.ArgsTruncated)
			}
			if !slices.Equal(argStrings(ex.Args), args) {
				t.Errorf("name %d bytes, args %d: args %q", nameLen, argsLen, ex.Args)
			}
		}
	}
}

func argStrings(args [][]byte) []string {
	var s []string
	for _, a := range args {
		s = append(s, string(a))
	}
	return s
}

// A cgroup's names reach the reader before the first event from it, for
// an exec built in place and one built on the heap alike: the container
// of a process that execs once and exits is named from them.
func TestPrivilegedCgroupNamesBeforeFirstEvent(t *testing.T) {
	testutil.RequirePrivileged(t)
	mount, ok := procfs.Cgroup2Mount(procfs.Root + "/self/mountinfo")
	if !ok {
		t.Fatal("no cgroup v2 mount")
	}
	c := testutil.Collect(t, event.KindSet(0).Add(event.Exec))
	for _, pad := range []int{0, 300} {
		m := marker()
		dir := filepath.Join(mount, "nstrace-test-"+m)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(dir) })
		// The exec is the first event of the process in its new cgroup.
		script := fmt.Sprintf("echo $$ > %s/cgroup.procs && exec /bin/true %s %s", dir, m, strings.Repeat("p", pad))
		if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		ex := c.Wait(t, 1, wait, func(e *event.Event) bool {
			return e.Kind == event.Exec && len(e.Args) > 1 && string(e.Args[1]) == m
		})[0]
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		if ex.CgroupID != st.Ino || ex.CgroupName != filepath.Base(dir) {
			t.Errorf("exec with %d bytes of padding: cgroup %d %q, want %d %q", pad, ex.CgroupID, ex.CgroupName, st.Ino, filepath.Base(dir))
		}
	}
}

// A cgroup whose names the decoder forgot has them sent again with its
// next event, even on a CPU that saw it a moment before (the kernel's
// list of each CPU's recent cgroups is emptied with the rest).
func TestPrivilegedCgroupNamesSentAgain(t *testing.T) {
	testutil.RequirePrivileged(t)
	testutil.NeedTools(t, "taskset")
	mount, ok := procfs.Cgroup2Mount(procfs.Root + "/self/mountinfo")
	if !ok {
		t.Fatal("no cgroup v2 mount")
	}
	c := testutil.Collect(t, event.KindSet(0).Add(event.Exec))
	dir := testutil.CgroupDir(t, mount, "nstrace-test-"+marker())
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	// An exec in the cgroup, on the first CPU this test may use.
	var cpus unix.CPUSet
	if err := unix.SchedGetaffinity(0, &cpus); err != nil {
		t.Fatal(err)
	}
	cpu := 0
	for !cpus.IsSet(cpu) {
		cpu++
	}
	execIn := func() {
		t.Helper()
		m := marker()
		script := fmt.Sprintf("echo $$ > %s/cgroup.procs && exec /bin/true %s", dir, m)
		if out, err := exec.Command("taskset", "-c", strconv.Itoa(cpu), "sh", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		ex := c.Wait(t, 1, wait, isExec("/bin/true", m))[0]
		if ex.CgroupID != st.Ino || ex.CgroupName != filepath.Base(dir) {
			t.Errorf("exec: cgroup %d %q, want %d %q", ex.CgroupID, ex.CgroupName, st.Ino, filepath.Base(dir))
		}
	}
	execIn()
	p := c.Probe()
	if !p.CgroupSent(st.Ino) {
		t.Fatalf("cgroup %d: names not noted as sent", st.Ino)
	}
	p.ForgetCgroups([]uint64{st.Ino})
	if p.CgroupSent(st.Ino) {
		t.Fatalf("cgroup %d: still noted as sent once forgotten", st.Ino)
	}
	execIn()
	if !p.CgroupSent(st.Ino) {
		t.Errorf("cgroup %d: names not sent again after they were forgotten", st.Ino)
	}
}

func TestPrivilegedLongArgs(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.KindSet(0).Add(event.Exec))
	m := marker()
	// 300 arguments of 100 bytes: past any "first few words" limit.
	args := []string{m}
	for i := 0; i < 300; i++ {
		args = append(args, fmt.Sprintf("%03d-%096d", i, i))
	}
	if err := exec.Command("/bin/true", args...).Run(); err != nil {
		t.Fatal(err)
	}
	ex := c.Wait(t, 1, wait, func(e *event.Event) bool {
		return e.Kind == event.Exec && len(e.Args) > 1 && string(e.Args[1]) == m
	})[0]
	if ex.ArgsTruncated || len(ex.Args) != len(args)+1 {
		t.Fatalf("got %d args (truncated %v), want %d", len(ex.Args), ex.ArgsTruncated, len(args)+1)
	}
	for i, a := range args {
		if string(ex.Args[i+1]) != a {
			t.Fatalf("arg %d = %q, want %q", i+1, ex.Args[i+1], a)
		}
	}

	// Past the bound: cut, and marked so.
	huge := []string{m, string(make([]byte, 0)) + fmt.Sprintf("%040000d", 1)}
	if err := exec.Command("/bin/true", huge...).Run(); err != nil {
		t.Fatal(err)
	}
	ex = c.Wait(t, 2, wait, func(e *event.Event) bool {
		return e.Kind == event.Exec && len(e.Args) > 1 && string(e.Args[1]) == m
	})[1]
	if !ex.ArgsTruncated {
		t.Error("a 40 kB argument was not marked truncated")
	}
}

func TestPrivilegedUnshare(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.AllKinds())
	host := procNS(t, uint32(os.Getpid()))
	m := marker()
	cmd := start(t, exec.Command("unshare", "-n", "-u", "sleep", m))
	pid := uint32(cmd.Process.Pid)
	// A new network namespace can take long to make under emulation,
	// behind the teardown of earlier tests' ones: the event is waited for
	// once the exec has happened.
	waitExeced(t, pid, "sleep\x00"+m+"\x00")
	c.Wait(t, 1, wait, isExec("sleep", m))
	after := procNS(t, pid)

	u := c.Wait(t, 1, wait, kindPID(event.Unshare, pid))[0]
	if u.FlagsRaw != unix.CLONE_NEWNET|unix.CLONE_NEWUTS || u.Ret != 0 {
		t.Errorf("unshare flags %#x ret %d", u.FlagsRaw, u.Ret)
	}
	assertNS(t, "unshare after", u.NS, after)
	assertNS(t, "unshare before", u.PrevNS, host)
	if got := u.NewNS().Types(); !slices.Equal(got, []ns.Type{ns.Net, ns.UTS}) {
		t.Errorf("new namespaces %v, want [net uts]", got)
	}
}

// The suite catches namespace calls the way it was asked to (the kernel
// matrix runs it once per way): the programs of that path are the ones in
// the kernel, and an unshare arrives through them. Asked for fentry,
// nstrace's own choice must be fentry too: a kernel that allows BPF
// trampolines gets them.
func TestPrivilegedHookPath(t *testing.T) {
	testutil.RequirePrivileged(t)
	want := testutil.Hooks(t)
	before := testutil.LoadedPrograms()
	c := testutil.Collect(t, event.Kinds(event.Unshare))
	got, why := c.Probe().Hooks()
	t.Logf("namespace system calls: %s (%s)", got, why)
	if want != probe.HooksAuto && got != want {
		t.Fatalf("hooks %s (%s), want %s", got, why, want)
	}
	progs := testutil.ProgramsSince(before)
	wantProg := map[probe.Hooks]string{probe.HooksFentry: "nst_unshare_in", probe.HooksTracepoint: "nst_sys_enter"}[got]
	if !progs[wantProg] || len(progs) != 2 {
		t.Errorf("programs loaded for unshare events over %s: %v, want %s and its exit", got, progs, wantProg)
	}
	m := marker()
	cmd := start(t, exec.Command("unshare", "-u", "sleep", m))
	u := c.Wait(t, 1, wait, kindPID(event.Unshare, uint32(cmd.Process.Pid)))[0]
	if u.FlagsRaw != unix.CLONE_NEWUTS || u.Ret != 0 {
		t.Errorf("unshare flags %#x ret %d", u.FlagsRaw, u.Ret)
	}

	// nstrace's own choice: fentry exactly where fentry attaches (arm64
	// loads fentry programs before 6.4 but cannot attach them).
	p, err := probe.Open(probe.Options{Kinds: event.Kinds(event.Unshare)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	auto, why := p.Hooks()
	fentryErr := probe.FentryAllowed()
	t.Logf("auto: %s (%s)", auto, why)
	if (fentryErr == nil) != (auto == probe.HooksFentry) || want == probe.HooksFentry && auto != probe.HooksFentry {
		t.Errorf("auto chose %s (%s); fentry attaches: %v", auto, why, fentryErr)
	}

	// fentry asked for: where the kernel refuses BPF trampolines, the
	// error says so rather than hint at permissions.
	f, err := probe.Open(probe.Options{Kinds: event.Kinds(event.Unshare), Hooks: probe.HooksFentry})
	switch {
	case fentryErr == nil && err != nil:
		t.Errorf("--syscall-hooks fentry where fentry attaches: %v", err)
	case fentryErr != nil && err == nil:
		f.Close()
		t.Errorf("--syscall-hooks fentry opened where fentry does not attach (%v)", fentryErr)
	case fentryErr != nil && (!strings.Contains(err.Error(), "refuses BPF trampolines") || strings.Contains(err.Error(), "run as root")):
		t.Errorf("--syscall-hooks fentry where fentry does not attach: %v", err)
	case err == nil:
		f.Close()
	}
}

// Events that need no system call watch none, and say so; those only the
// raw syscall tracepoints catch are caught there whatever the kernel
// allows.
func TestPrivilegedHooksByEvents(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, tc := range []struct {
		name  string
		kinds event.KindSet
		want  probe.Hooks
	}{
		{"fork,exec,exit", event.Kinds(event.Fork, event.Exec, event.Exit), probe.HooksNone},
		{"exec,uid", event.Kinds(event.Exec, event.UID), probe.HooksTracepoint},
	} {
		before := testutil.LoadedPrograms()
		p, err := probe.Open(probe.Options{Kinds: tc.kinds})
		if err != nil {
			t.Fatal(err)
		}
		progs := testutil.ProgramsSince(before)
		sys := progs["nst_sys_enter"] || progs["nst_sys_exit"]
		got, why := p.Hooks()
		p.Close()
		if got != tc.want || sys != (tc.want == probe.HooksTracepoint) {
			t.Errorf("%s: hooks %s (%s), syscall tracepoint programs loaded: %v; want %s", tc.name, got, why, sys, tc.want)
		}
	}
}

func TestPrivilegedUnshareForkPid(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.AllKinds())
	m := marker()
	cmd := start(t, exec.Command("unshare", "--fork", "--kill-child", "--pid", "sleep", m))
	pid := uint32(cmd.Process.Pid)
	ex := c.Wait(t, 1, wait, isExec("sleep", m))[0]
	child := procNS(t, ex.PID)

	u := c.Wait(t, 1, wait, kindPID(event.Unshare, pid))[0]
	if u.FlagsRaw != unix.CLONE_NEWPID || u.Ret != 0 {
		t.Errorf("unshare flags %#x ret %d", u.FlagsRaw, u.Ret)
	}
	if got := u.NewNS().Types(); !slices.Equal(got, []ns.Type{ns.PidForChildren}) {
		t.Errorf("unshare --pid changes %v, want [pid_for_children]", got)
	}
	if u.NS[ns.PidForChildren] != child[ns.Pid] {
		t.Errorf("pid_for_children %d, child's pid ns %d", u.NS[ns.PidForChildren], child[ns.Pid])
	}
	fk := c.Wait(t, 1, wait, func(e *event.Event) bool { return e.Kind == event.Fork && e.ChildPID == ex.PID })[0]
	if fk.ChildNSPID != 1 || !slices.Equal(fk.NewNS().Types(), []ns.Type{ns.Pid}) {
		t.Errorf("fork child nspid %d new %v", fk.ChildNSPID, fk.NewNS().Types())
	}
}

// target starts a process in fresh namespaces to enter.
func target(t *testing.T, c *testutil.Collector) (uint32, ns.Set) {
	t.Helper()
	m := marker()
	start(t, exec.Command("unshare", "--fork", "--kill-child", "--pid", "--mount", "--uts", "--ipc", "--net", "sleep", m))
	pid := c.Wait(t, 1, wait, isExec("sleep", m))[0].PID
	return pid, procNS(t, pid)
}

func TestPrivilegedNsenter(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.AllKinds())
	tpid, tns := target(t, c)

	cmd := exec.Command("nsenter", "-t", strconv.Itoa(int(tpid)), "-m", "-u", "-i", "-n", "-p", "true")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	pid := uint32(cmd.Process.Pid)
	evs := c.Wait(t, 5, wait, kindPID(event.Setns, pid))
	seen := map[ns.Type]bool{}
	for _, e := range evs {
		if e.Ret != 0 {
			t.Errorf("setns fd %d returned %d", e.FD, e.Ret)
		}
		typ, ok := ns.OfCloneFlag(e.TargetType)
		if !ok {
			t.Errorf("setns fd %d: target type %#x", e.FD, e.TargetType)
			continue
		}
		seen[typ] = true
		if e.FlagsRaw != 0 && e.FlagsRaw != e.TargetType {
			t.Errorf("setns nstype %#x but target is %#x", e.FlagsRaw, e.TargetType)
		}
		if e.TargetNS != tns[typ] {
			t.Errorf("setns %s: target_ns %d, /proc/%d/ns/%s is %d", typ, e.TargetNS, tpid, typ, tns[typ])
		}
		// Entering a pid namespace changes where children go.
		after := typ
		if typ == ns.Pid {
			after = ns.PidForChildren
		}
		if e.NS[after] != tns[typ] {
			t.Errorf("after setns %s: %s is %d, want %d", typ, after, e.NS[after], tns[typ])
		}
	}
	for _, typ := range []ns.Type{ns.Mnt, ns.UTS, ns.IPC, ns.Net, ns.Pid} {
		if !seen[typ] {
			t.Errorf("no setns into %s", typ)
		}
	}
}

func TestPrivilegedSetnsPidfd(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.KindSet(0).Add(event.Setns).Add(event.Exec))
	tpid, tns := target(t, c)
	flags := unix.CLONE_NEWNET | unix.CLONE_NEWUTS
	cmd := helperCmd("setns", "pidfd", strconv.Itoa(int(tpid)), strconv.Itoa(flags))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	e := c.Wait(t, 1, wait, kindPID(event.Setns, uint32(cmd.Process.Pid)))[0]
	if e.TargetPID != tpid || e.FlagsRaw != uint64(flags) || e.Ret != 0 || e.TargetNS != 0 {
		t.Errorf("pidfd setns: target_pid %d nstype %#x ret %d target_ns %d", e.TargetPID, e.FlagsRaw, e.Ret, e.TargetNS)
	}
	if e.NS[ns.Net] != tns[ns.Net] || e.NS[ns.UTS] != tns[ns.UTS] {
		t.Errorf("after pidfd setns: net %d uts %d, want %d %d", e.NS[ns.Net], e.NS[ns.UTS], tns[ns.Net], tns[ns.UTS])
	}
	if got := e.NewNS().Types(); !slices.Equal(got, []ns.Type{ns.Net, ns.UTS}) {
		t.Errorf("moved in %v, want [net uts]", got)
	}
}

func TestPrivilegedSetnsBadFD(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.KindSet(0).Add(event.Setns))
	cmd := helperCmd("setns", "fd", "9999", "0")
	_ = cmd.Run()
	e := c.Wait(t, 1, wait, kindPID(event.Setns, uint32(cmd.Process.Pid)))[0]
	if e.Ret != -int64(unix.EBADF) || e.FD != 9999 || e.FlagsRaw != 0 || e.NewNS() != 0 {
		t.Errorf("bad fd setns: ret %d fd %d nstype %#x moved %v", e.Ret, e.FD, e.FlagsRaw, e.NewNS())
	}
}

func TestPrivilegedIPNetns(t *testing.T) {
	testutil.RequirePrivileged(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("ip (iproute2) is needed")
	}
	c := testutil.Collect(t, event.KindSet(0).Add(event.Setns).Add(event.Exec))
	name := fmt.Sprintf("nstrace-test-%d", rand.IntN(1_000_000))
	testutil.SharedNetnsDir(t)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	var st unix.Stat_t
	if err := unix.Stat("/run/netns/"+name, &st); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", name, "true")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip netns exec: %v: %s", err, out)
	}
	e := c.Wait(t, 1, wait, kindPID(event.Setns, uint32(cmd.Process.Pid)))[0]
	if e.TargetNS != st.Ino || e.TargetType != unix.CLONE_NEWNET || e.Ret != 0 || e.NS[ns.Net] != st.Ino {
		t.Errorf("ip netns exec: target %d type %#x ret %d net after %d; bind mount inode %d", e.TargetNS, e.TargetType, e.Ret, e.NS[ns.Net], st.Ino)
	}
}

func TestPrivilegedCloneWithNamespaces(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.Collect(t, event.AllKinds())
	m := marker()
	cmd := exec.Command("sleep", m)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUTS | unix.CLONE_NEWNET}
	start(t, cmd)
	child := uint32(cmd.Process.Pid)
	c.Wait(t, 1, wait, isExec("sleep", m))
	want := procNS(t, child)

	cl := c.Wait(t, 1, wait, func(e *event.Event) bool { return e.Kind == event.Clone && e.ChildPID == child })[0]
	if cl.PID != uint32(os.Getpid()) || cl.FlagsRaw&(unix.CLONE_NEWUTS|unix.CLONE_NEWNET) != unix.CLONE_NEWUTS|unix.CLONE_NEWNET {
		t.Errorf("clone pid %d flags %#x", cl.PID, cl.FlagsRaw)
	}
	assertNS(t, "clone child", cl.ChildNS, want)
	if got := cl.NewNS().Types(); !slices.Equal(got, []ns.Type{ns.Net, ns.UTS}) {
		t.Errorf("clone new namespaces %v", got)
	}
	c.Settle()
	births := c.Wait(t, 0, 0, func(e *event.Event) bool {
		return (e.Kind == event.Fork || e.Kind == event.Clone) && e.ChildPID == child
	})
	if len(births) != 1 {
		t.Errorf("child %d born %d times in the feed", child, len(births))
	}
}

func hasArg(e *event.Event, a string) bool {
	return e.Kind == event.Exec && slices.ContainsFunc(e.Args, func(b []byte) bool { return string(b) == a })
}

func TestPrivilegedNSFilterInKernel(t *testing.T) {
	testutil.RequirePrivileged(t)
	all := testutil.Collect(t, event.AllKinds())
	tpid, tns := target(t, all)
	net := tns[ns.Net]
	c := testutil.CollectWith(t, probe.Options{
		Kinds:  event.AllKinds(),
		Filter: probe.Filter{Namespaces: []probe.NSRef{{Inode: net, Types: ns.MaskOf(ns.Net)}}},
	})
	a, b, d := marker(), marker(), marker()
	// A host process, a process entering the target's netns, and one in
	// another new netns: only the second belongs.
	for _, cmd := range []*exec.Cmd{
		exec.Command("/bin/true", a),
		exec.Command("nsenter", "-t", strconv.Itoa(int(tpid)), "-n", "/bin/true", b),
		exec.Command("unshare", "-n", "/bin/true", d),
	} {
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", cmd.Args, err, out)
		}
	}
	c.Wait(t, 1, wait, func(e *event.Event) bool { return hasArg(e, b) })
	all.Wait(t, 1, wait, func(e *event.Event) bool { return hasArg(e, d) })
	c.Settle()
	for _, e := range c.Events() {
		if hasArg(e, a) || hasArg(e, d) {
			t.Errorf("filtered feed shows %v %q", e.Kind, e.Args)
		}
		if e.NS[ns.Net] != net && e.ChildNS[ns.Net] != net && e.PrevNS[ns.Net] != net {
			t.Errorf("%v of pid %d (%s) is not in net:[%d]", e.Kind, e.PID, e.Comm, net)
		}
	}
	// The setns into the namespace shows up too (its after-state matches).
	c.Wait(t, 1, wait, func(e *event.Event) bool { return e.Kind == event.Setns && e.TargetNS == net })
}

// A cgroup added to the kernel's cgroup filter while the probe runs:
// its processes are reported from then on, a cgroup's never added
// never; a probe with no cgroup filter takes none.
func TestPrivilegedCgroupFilterAdded(t *testing.T) {
	testutil.RequirePrivileged(t)
	h := procfs.FindHierarchies("/proc/self/mountinfo", procfs.CgroupV1Controllers)
	root, v1, controller := h.V2, false, ""
	if root == "" { // cgroup v1 alone
		h = testutil.CgroupV1(t)
		root, v1, controller = h.V1, true, h.Controller
	}
	m := marker()
	dirs := map[string]string{}
	for _, name := range []string{"first", "later", "never"} {
		dirs[name] = testutil.CgroupDir(t, root, "nstrace-test-"+m+"-"+name)
	}
	ids := func(name string) []uint64 { return []uint64{inode(t, dirs[name])} }
	f := probe.Filter{Cgroups: ids("first")}
	if v1 {
		f = probe.Filter{CgroupsV1: ids("first")}
	}
	c := testutil.CollectWith(t, probe.Options{Kinds: event.KindSet(0).Add(event.Exec), CgroupV1: controller, CgroupV1Hierarchy: h.ID, Filter: f})
	in := func(name, arg string) {
		run(t, "sh", "-c", fmt.Sprintf("echo $$ >%s/cgroup.procs && exec /bin/true %s %s", dirs[name], arg, m))
	}
	in("later", "before")
	in("first", "first")
	c.Wait(t, 1, wait, isExec("/bin/true", "first", m))
	if err := c.Probe().FilterCgroup(ids("later")[0], v1); err != nil {
		t.Fatal(err)
	}
	in("later", "after")
	in("never", "never")
	c.Wait(t, 1, wait, isExec("/bin/true", "after", m))
	c.Settle()
	for _, e := range c.Events() {
		if hasArg(e, "before") || hasArg(e, "never") {
			t.Errorf("the cgroup filter let through %q in cgroup %d", e.Args, e.CgroupID)
		}
	}
	// A v1 cgroup for a probe that reads no v1 hierarchy could never
	// match.
	if !v1 {
		if err := c.Probe().FilterCgroup(ids("later")[0], true); err == nil {
			t.Error("a probe without a cgroup v1 controller took a v1 cgroup")
		}
	}
	// The filter's table holds 256 cgroups: two in it, 254 more fit, the
	// next is a clear error.
	var err error
	n := 0
	for ; err == nil && n < 1000; n++ {
		err = c.Probe().FilterCgroup(1<<40+uint64(n), v1)
	}
	if err == nil || !strings.Contains(err.Error(), "the filter holds 256 cgroups, its most") || n != 255 {
		t.Errorf("adding cgroups past the filter's size: %v after %d", err, n)
	}
	unfiltered := testutil.Collect(t, event.KindSet(0).Add(event.Exec))
	if err := unfiltered.Probe().FilterCgroup(ids("later")[0], v1); err == nil {
		t.Error("a probe with no cgroup filter took a cgroup")
	}
}

func TestPrivilegedPIDFilterInKernel(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, follow := range []bool{true, false} {
		t.Run(fmt.Sprintf("follow=%v", follow), func(t *testing.T) {
			all := testutil.Collect(t, event.KindSet(0).Add(event.Exec))
			b, g, a := marker(), marker(), marker()
			// "; exit 0" keeps any shell from exec'ing its last command
			// in place, which would make the grandchild the child.
			sh := exec.Command("sh", "-c", "read x; /bin/true "+b+"; sh -c '/bin/true "+g+"; exit 0'; exit 0")
			in, err := sh.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			start(t, sh)
			pid := uint32(sh.Process.Pid)
			all.Wait(t, 1, wait, kindPID(event.Exec, pid)) // sh itself is running
			c := testutil.CollectWith(t, probe.Options{
				Kinds: event.AllKinds(), Filter: probe.Filter{Tracked: true, PIDs: []uint32{pid}, Follow: follow},
			})
			if err := exec.Command("/bin/true", a).Run(); err != nil {
				t.Fatal(err)
			}
			in.Write([]byte("go\n"))
			if err := sh.Wait(); err != nil {
				t.Fatal(err)
			}
			c.Wait(t, 1, wait, kindPID(event.Exit, pid))
			c.Settle()
			var sawB, sawG bool
			tree := map[uint32]bool{pid: true}
			for _, e := range c.Events() {
				if e.Kind == event.Fork {
					tree[e.ChildPID] = true
				}
			}
			for _, e := range c.Events() {
				sawB = sawB || hasArg(e, b)
				sawG = sawG || hasArg(e, g)
				if hasArg(e, a) {
					t.Error("an unrelated process is in the feed")
				}
				if follow && !tree[e.PID] {
					t.Errorf("%v of pid %d is outside the tree", e.Kind, e.PID)
				}
				if !follow && e.PID != pid {
					t.Errorf("without follow, %v of child %d is in the feed", e.Kind, e.PID)
				}
			}
			if follow != sawB || follow != sawG {
				t.Errorf("follow=%v: child exec seen %v, grandchild exec seen %v", follow, sawB, sawG)
			}
		})
	}
}
