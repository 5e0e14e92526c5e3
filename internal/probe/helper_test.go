// SPDX-License-Identifier: Apache-2.0

package probe_test

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
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
