// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/testutil"
)

func TestForkstatFlags(t *testing.T) {
	o, err := parseFlags([]string{"-D", "1.5", "-S", "-q", "-x"}, nil, nil)
	if err != nil || o.Duration != 1500*time.Millisecond || !o.Stats || !o.Quiet || !o.Failed {
		t.Errorf("%+v %v", o, err)
	}
	if !o.Kinds.Has(event.Exec) || o.Kinds != event.DefaultKinds() {
		t.Errorf("-x with the default events: %b", o.Kinds)
	}
	o, _ = parseFlags([]string{"-e", "fork", "-x"}, nil, nil)
	if o.Kinds != event.Kinds(event.Fork, event.Exec) {
		t.Errorf("-e fork -x: %b, want fork and exec", o.Kinds)
	}
	o, _ = parseFlags([]string{"-e", "all"}, nil, nil)
	if o.Kinds != event.AllKinds() || !o.Kinds.Has(event.Ptrace) {
		t.Errorf("-e all: %b", o.Kinds)
	}
	if _, err := parseFlags([]string{"-D", "-1"}, nil, nil); err == nil {
		t.Error("-D -1 accepted")
	}
}

// -e core,nonzeroexit reports only the exits that dumped core or did not
// end with status 0.
func TestPrivilegedCoreAndNonzeroExit(t *testing.T) {
	testutil.RequirePrivileged(t)
	dir := t.TempDir()
	code, evs := runJSON(t, "--json", "-e", "core,nonzeroexit", "--",
		"sh", "-c", `cd `+dir+`; (ulimit -c unlimited; sh -c 'kill -SEGV $$'); sh -c 'exit 3'; true; exit 0`)
	if code != 0 {
		t.Fatalf("nstrace exited %d", code)
	}
	var core, three int
	for _, e := range evs {
		if e["event"] != "exit" {
			t.Errorf("not an exit: %v", e)
			continue
		}
		switch {
		case e["signal"] == float64(syscall.SIGSEGV) && e["core_dumped"] == true:
			core++
		case e["exit_code"] == float64(3):
			three++
		default:
			t.Errorf("an exit neither core nor nonzero: %v", e)
		}
	}
	if core != 1 || three != 1 {
		t.Errorf("%d core exits and %d exits with 3, want 1 and 1", core, three)
	}
}

// -q -S -D: no feed, a table per command name at the end, and a stop
// after the duration.
func TestPrivilegedQuietStatsDuration(t *testing.T) {
	testutil.RequirePrivileged(t)
	// A name under 16 bytes: the kernel's comm keeps 15.
	m := fmt.Sprintf("nstq%d", rand.IntN(1_000_000))
	var stderr bytes.Buffer
	began := time.Now()
	cmd, out := startRaw(t, &stderr, "-q", "-S", "-D", "3", "-e", "exec,exit", "--comm", m)
	prog := writeScript(t, m)
	for i := 0; i < 3; i++ {
		if err := exec.Command(prog).Run(); err != nil {
			t.Fatal(err)
		}
	}
	feed, _ := io.ReadAll(out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nstrace: %v: %s", err, stderr.String())
	}
	if d := time.Since(began); d < 3*time.Second {
		t.Errorf("stopped after %v, before -D 3", d)
	}
	if len(feed) != 0 {
		t.Errorf("-q wrote a feed: %q", feed)
	}
	var row []string
	for _, line := range strings.Split(stderr.String(), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == m {
			row = f
		}
	}
	// fork exec exit clone unshare setns comm uid sid ptrace core total life COMM
	if len(row) != 14 || row[1] != "3" || row[2] != "3" || row[11] != "6" {
		t.Errorf("no row of 3 execs and 3 exits for %s in:\n%s", m, stderr.String())
	}
}

// writeScript writes a script named name that exits 0; its exec and exit
// carry that name.
func writeScript(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}
