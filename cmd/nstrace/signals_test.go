// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/testutil"
)

// A terminal's Ctrl-C reaches nstrace's whole process group: COMMAND gets
// it, and nstrace reports until COMMAND's tree is gone and exits with its
// status.
func TestPrivilegedInterruptWithCommand(t *testing.T) {
	testutil.RequirePrivileged(t)
	cmd := nstraceCmd("--json", "-e", "exec,exit", "--", "sh", "-c", `trap "exit 7" INT; sleep 2 & wait`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }()
	lines := jsonLines(out)
	var shPID float64
	for l := range lines {
		if l["event"] == "exec" && l["comm"] == "sleep" {
			shPID = l["ppid"].(float64)
			break
		}
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var shExit map[string]any
	for l := range lines {
		if l["event"] == "exit" && l["pid"] == shPID {
			shExit = l
		}
	}
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Errorf("nstrace: %v, want exit status 7 (COMMAND's); stderr %q", err, stderr.String())
	}
	if shExit == nil || shExit["exit_code"] != 7.0 {
		t.Errorf("COMMAND's exit event %v, want exit_code 7", shExit)
	}
	if !strings.Contains(stderr.String(), "nstrace: ") {
		t.Errorf("no summary: %q", stderr.String())
	}
}

// A second signal ends nstrace before COMMAND is done.
func TestPrivilegedSecondSignalStops(t *testing.T) {
	testutil.RequirePrivileged(t)
	cmd, out := startRaw(t, io.Discard, "-e", "exec", "--", "sh", "-c", `trap "" INT TERM; echo trapped; exec sleep 30`)
	// COMMAND shares nstrace's stdout: its line says the trap is set.
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "trapped" {
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(100 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	// COMMAND lives on and holds the pipes: wait for nstrace alone.
	werr := make(chan *os.ProcessState, 1)
	go func() {
		st, _ := cmd.Process.Wait()
		werr <- st
	}()
	defer func() { _ = exec.Command("pkill", "-KILL", "-f", "^sleep 30$").Run() }()
	select {
	case st := <-werr:
		if st == nil || st.ExitCode() != 128+int(syscall.SIGTERM) {
			t.Errorf("nstrace after two SIGTERMs: %v, want exit status 143", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nstrace still runs after a second SIGTERM")
	}
}

// What the kernel had queued when the signal came is written before
// nstrace ends.
func TestPrivilegedSignalDrainsQueue(t *testing.T) {
	testutil.RequirePrivileged(t)
	const n = 400
	marker := fmt.Sprintf("drain-%d", rand.IntN(1_000_000))
	var stderr bytes.Buffer
	cmd, out := startRaw(t, &stderr, "--json", "-e", "exec")
	// Nobody reads yet: the pipe fills and the rest waits in the ring
	// buffer.
	sc := stormCmd(n, 2, marker, "")
	if b, err := exec.Command(sc[0], sc[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("storm: %v: %s", err, b)
	}
	_ = cmd.Process.Signal(os.Interrupt)
	execs, lost := countMarked(t, out, marker)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nstrace: %v: %s", err, stderr.String())
	}
	if execs != n || lost != 0 {
		t.Errorf("%d of %d execs written after the signal, %d lost; stderr %q", execs, n, lost, stderr.String())
	}
}

// A full kernel table shows in the feed, with its reason, and in the
// summary; the events reported and the ones counted lost add up to what
// happened.
func TestPrivilegedLossReasonsInFeed(t *testing.T) {
	testutil.RequirePrivileged(t)
	const children = 6
	var stderr bytes.Buffer
	// Room for COMMAND and two children in the traced set.
	cmd := nstraceCmd("--json", "-e", "fork,exit", "--limits", "tracked=3", "--", "sh", "-c",
		fmt.Sprintf("for i in $(seq %d); do sleep 0.5 & done; wait", children))
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nstrace: %v: %s", err, stderr.String())
	}
	var untracked, childExits, forks int
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %q", sc.Text())
		}
		switch {
		case m["event"] == "lost":
			if m["reason"] != "traced_set_full" || m["child_pid"] == nil || m["count"] != 1.0 {
				t.Errorf("lost line %v", m)
			}
			untracked++
		case m["event"] == "fork":
			forks++
		case m["event"] == "exit" && m["comm"] == "sleep":
			childExits++
		}
	}
	// sh also forks for $(seq): that child comes and goes first.
	if forks != children+1 || untracked+childExits != children || untracked != children-2 {
		t.Errorf("%d forks: %d children followed to their exit, %d not followed", forks, childExits, untracked)
	}
	want := fmt.Sprintf("%d lost (the traced set was full: %d)", untracked, untracked)
	if !strings.Contains(stderr.String(), want) {
		t.Errorf("summary %q lacks %q", stderr.String(), want)
	}
}

// jsonLines parses r's lines as they come; the channel closes at EOF.
func jsonLines(r io.Reader) <-chan map[string]any {
	ch := make(chan map[string]any, 1000)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				ch <- m
			}
		}
	}()
	return ch
}
