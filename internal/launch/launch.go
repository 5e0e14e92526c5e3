// SPDX-License-Identifier: Apache-2.0

// Package launch runs nstrace's COMMAND: started held at a gate so that it
// is traced before its first exec, and reaped with every descendant that
// outlives it, nstrace being their subreaper.
package launch

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// GateEnv marks the child that becomes COMMAND: it says on fd 4 that it
// runs (so its own exec of nstrace is over and not traced), then waits on
// fd 3 until nstrace traces its pid, so that COMMAND's very first exec is
// seen.
const GateEnv = "NSTRACE_EXEC_GATE"

// Gate runs in that child, in place of nstrace's main when GateEnv is set,
// and execs COMMAND once released. It returns only on failure, with the
// exit status to end with.
func Gate(args []string) int {
	ready := os.NewFile(4, "ready")
	_, _ = ready.Write([]byte{1})
	ready.Close()
	f := os.NewFile(3, "gate")
	var b [1]byte
	if n, _ := f.Read(b[:]); n != 1 {
		return 127 // nstrace went away before tracing started
	}
	f.Close()
	path, err := exec.LookPath(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "nstrace: %v\n", err)
		return 127
	}
	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, GateEnv+"=") {
			env = append(env, kv)
		}
	}
	err = syscall.Exec(path, args, env)
	fmt.Fprintf(os.Stderr, "nstrace: running %s: %v\n", args[0], err)
	return 126
}

// Command is COMMAND, started but held at the gate.
type Command struct {
	// PID is COMMAND's process id, to trace before Release.
	PID     int
	release *os.File
	done    chan int
}

// Start starts args held at the gate. nstrace becomes a child
// subreaper, so COMMAND's orphans come back to it and it can tell when the
// whole tree is gone.
func Start(args []string) (*Command, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("becoming a subreaper: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		w.Close()
		return nil, err
	}
	defer readyR.Close()
	proc, err := os.StartProcess("/proc/self/exe", append([]string{"nstrace"}, args...), &os.ProcAttr{
		Env:   append(os.Environ(), GateEnv+"=1"),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr, r, readyW},
	})
	readyW.Close()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("starting %s: %w", args[0], err)
	}
	c := &Command{PID: proc.Pid, release: w, done: make(chan int, 1)}
	go c.reap()
	var b [1]byte
	if n, _ := readyR.Read(b[:]); n != 1 {
		w.Close()
		return nil, fmt.Errorf("starting %s: the child died at once", args[0])
	}
	return c, nil
}

// Release lets COMMAND run.
func (c *Command) Release() error {
	_, err := c.release.Write([]byte{1})
	c.release.Close()
	return err
}

// Abort makes a COMMAND still held at the gate exit without running.
func (c *Command) Abort() { c.release.Close() }

// Done receives COMMAND's exit status once it and every descendant that
// outlived it have exited: the code, or 128+N for signal N, as a shell
// reports it.
func (c *Command) Done() <-chan int { return c.done }

func (c *Command) reap() {
	status := 1
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			break // ECHILD: the whole tree is gone
		}
		if pid == c.PID {
			status = exitStatus(ws)
		}
	}
	c.done <- status
}

// exitStatus is what a shell would report: the code, or 128+signal.
func exitStatus(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
