// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// gateEnv marks the child that becomes COMMAND: it says on fd 4 that it
// runs (so its own exec of nstrace is over and not traced), then waits on
// fd 3 until nstrace traces its pid, so that COMMAND's very first exec is
// seen.
const gateEnv = "NSTRACE_EXEC_GATE"

// gate runs in that child. It never returns on success.
func gate(args []string) int {
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
		if !strings.HasPrefix(kv, gateEnv+"=") {
			env = append(env, kv)
		}
	}
	err = syscall.Exec(path, args, env)
	fmt.Fprintf(os.Stderr, "nstrace: running %s: %v\n", args[0], err)
	return 126
}

// command is COMMAND, started but held at the gate.
type command struct {
	pid     int
	release *os.File
	// done receives COMMAND's exit status once it and every descendant
	// that outlived it have exited.
	done chan int
}

// startCommand starts args held at the gate. nstrace becomes a child
// subreaper, so COMMAND's orphans come back to it and it can tell when the
// whole tree is gone.
func startCommand(args []string) (*command, error) {
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
		Env:   append(os.Environ(), gateEnv+"=1"),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr, r, readyW},
	})
	readyW.Close()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("starting %s: %w", args[0], err)
	}
	c := &command{pid: proc.Pid, release: w, done: make(chan int, 1)}
	go c.reap()
	var b [1]byte
	if n, _ := readyR.Read(b[:]); n != 1 {
		w.Close()
		return nil, fmt.Errorf("starting %s: the child died at once", args[0])
	}
	return c, nil
}

// start lets COMMAND run.
func (c *command) start() error {
	_, err := c.release.Write([]byte{1})
	c.release.Close()
	return err
}

// kill ends COMMAND if it is still at the gate.
func (c *command) abort() { c.release.Close() }

func (c *command) reap() {
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
		if pid == c.pid {
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
