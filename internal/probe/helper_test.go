// SPDX-License-Identifier: Apache-2.0

package probe_test

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/testutil/compat"
)

// helperEnv makes the test binary act as a small workload instead of
// running tests: the privileged tests need a process that does precise
// things (exec from a thread, setns with a pidfd) that no shell tool does.
const helperEnv = "NSTRACE_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func helper(mode string, args []string) int {
	// Keep the main goroutine, and so the thread group leader, to itself.
	runtime.LockOSThread()
	switch mode {
	case "exit":
		// Nothing, whatever argv[0] says (busybox would read it as the
		// applet to run).
		return 0
	case "thread-exec":
		// exec from a thread that is not the leader: the kernel makes it
		// the leader and the event must still carry the process's pid.
		done := make(chan error)
		go func() {
			runtime.LockOSThread()
			if unix.Gettid() == unix.Getpid() {
				done <- fmt.Errorf("goroutine on the leader thread")
				return
			}
			done <- syscall.Exec("/bin/true", append([]string{"true"}, args...), os.Environ())
		}()
		fmt.Fprintln(os.Stderr, <-done)
		return 1
	case "failed-exec":
		// A file that exists but cannot be executed: execve fails, so no
		// exec event may appear for it.
		err := syscall.Exec(args[0], []string{args[0]}, os.Environ())
		if err == nil {
			return 1
		}
		return 0
	case "setns":
		// setns(fd, nstype) with fd from a path, a pid (pidfd) or a
		// number as given; prints the result.
		var fd int
		var err error
		switch args[0] {
		case "path":
			fd, err = unix.Open(args[1], unix.O_RDONLY|unix.O_CLOEXEC, 0)
		case "pidfd":
			pid, _ := strconv.Atoi(args[1])
			fd, err = unix.PidfdOpen(pid, 0)
		default:
			fd, err = strconv.Atoi(args[1])
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		nstype, _ := strconv.ParseUint(args[2], 0, 32)
		if err := unix.Setns(fd, int(nstype)); err != nil {
			fmt.Println(err)
			return 3
		}
		return 0
	case "exit-race":
		// Threads that race to leave: exit_group from one while the
		// others spin, so several threads run do_exit together.
		code, _ := strconv.Atoi(args[0])
		spinThreads(7)
		os.Exit(code)
	case "leader-first":
		// The leader thread leaves alone (exit(2), not exit_group),
		// then another thread ends the group: wait(2) reports the
		// group's code.
		code, _ := strconv.Atoi(args[0])
		spinThreads(3)
		go func() {
			runtime.LockOSThread()
			time.Sleep(2 * time.Millisecond)
			syscall.RawSyscall(syscall.SYS_EXIT_GROUP, uintptr(code), 0, 0)
		}()
		// Through Syscall, not RawSyscall: the Go runtime hands this
		// thread's P on when the thread never comes back.
		syscall.Syscall(syscall.SYS_EXIT, 1, 0, 0)
	case "unshare-threads", "clone-threads":
		// THREADS threads each make CALLS namespace calls at once,
		// after a line on stdin: unshare(0), or a clone into a new uts
		// namespace whose child leaves at once.
		threads, _ := strconv.Atoi(args[0])
		calls, _ := strconv.Atoi(args[1])
		_, _ = os.Stdin.Read(make([]byte, 1))
		var wg sync.WaitGroup
		failed := make(chan error, threads)
		for i := 0; i < threads; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				for j := 0; j < calls; j++ {
					if err := namespaceCall(mode); err != nil {
						failed <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(failed)
		if err := <-failed; err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case "children":
		// After a line on stdin, N children that live until stdin
		// closes, then leave.
		n, _ := strconv.Atoi(args[0])
		_, _ = os.Stdin.Read(make([]byte, 3))
		var kids []*exec.Cmd
		for i := 0; i < n; i++ {
			c := exec.Command("sleep", "60")
			if err := c.Start(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			kids = append(kids, c)
		}
		fmt.Print("ready")
		for _, c := range kids {
			fmt.Print(" ", c.Process.Pid)
		}
		fmt.Println()
		_, _ = os.Stdin.Read(make([]byte, 1))
		for _, c := range kids {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
		return 0
	case "rename":
		// prctl(PR_SET_NAME), then a write to /proc/self/comm.
		if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&[]byte(args[0] + "\x00")[0])), 0, 0, 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := os.WriteFile(fmt.Sprintf("/proc/self/task/%d/comm", unix.Gettid()), []byte(args[1]), 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case "setresuid":
		// This thread alone takes uid and gid ARG (Go's Setuid would
		// change every thread, one call each).
		id, _ := strconv.Atoi(args[0])
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, uintptr(id), uintptr(id), uintptr(id)); e != 0 {
			fmt.Fprintln(os.Stderr, e)
			return 1
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, uintptr(id), uintptr(id), uintptr(id)); e != 0 {
			fmt.Fprintln(os.Stderr, e)
			return 1
		}
		// A call that changes nothing is no uid event.
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), ^uintptr(0), ^uintptr(0)); e != 0 {
			return 1
		}
		return 0
	case "setsid":
		sid, err := unix.Setsid()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(sid)
		return 0
	case "ptrace":
		// Attach to a child, wait for it to stop, detach; print its pid.
		c := exec.Command("sleep", "60")
		if err := c.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer func() { _ = c.Process.Kill(); _ = c.Wait() }()
		pid := c.Process.Pid
		if err := unix.PtraceAttach(pid); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		var ws unix.WaitStatus
		if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := unix.PtraceDetach(pid); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(pid)
		return 0
	case "compat":
		// 32-bit system calls from this 64-bit process, given as
		// ia32-number:first-argument; then one 64-bit unshare(0), to
		// show the thread is 64-bit again.
		for _, a := range args {
			n, arg, _ := strings.Cut(a, ":")
			nr, _ := strconv.Atoi(n)
			a1, _ := strconv.ParseInt(arg, 0, 64)
			r, ok := compat.Syscall(uintptr(nr), uintptr(a1), 0)
			if !ok {
				return 2
			}
			fmt.Println(nr, r)
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_UNSHARE, 0, 0, 0); e != 0 {
			return 3
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 2
}

// helperCmd runs the test binary as a helper.
func helperCmd(mode string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	return cmd
}

var spinSink atomic.Uint64

// spinThreads starts n threads that spin until the process ends.
func spinThreads(n int) {
	ready := make(chan struct{})
	for i := 0; i < n; i++ {
		go func() {
			runtime.LockOSThread()
			ready <- struct{}{}
			for spins := uint64(0); ; spins++ {
				// Busy on purpose: a thread on the CPU when the group ends.
				spinSink.Store(spins)
			}
		}()
	}
	for i := 0; i < n; i++ {
		<-ready
	}
}

// namespaceCall makes one call of a namespace-call helper mode.
func namespaceCall(mode string) error {
	if mode == "unshare-threads" {
		if _, _, e := syscall.RawSyscall(syscall.SYS_UNSHARE, 0, 0, 0); e != 0 {
			return fmt.Errorf("unshare: %w", e)
		}
		return nil
	}
	// A raw clone: the child is this one thread and leaves at once,
	// before touching anything of the Go runtime.
	pid, _, e := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(unix.CLONE_NEWUTS|int(syscall.SIGCHLD)), 0, 0, 0, 0, 0)
	if e != 0 {
		return fmt.Errorf("clone: %w", e)
	}
	if pid == 0 {
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 0, 0, 0)
	}
	var ws syscall.WaitStatus
	_, err := syscall.Wait4(int(pid), &ws, 0, nil)
	return err
}
