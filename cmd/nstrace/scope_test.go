// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/nstrace/nstrace/internal/testutil"
)

func TestScopeFlags(t *testing.T) {
	o, err := parseFlags([]string{"-p", "1,22", "-f", "--comm", "sh", "--no-host"}, nil, nil)
	if err != nil || !slices.Equal(o.Scope.PIDs, []uint32{1, 22}) || !o.Scope.Follow || !o.Scope.NotHost || o.Scope.Comms[0] != "sh" {
		t.Errorf("%+v %v", o, err)
	}
	o, err = parseFlags([]string{"--json", "--", "sh", "-c", "true"}, nil, nil)
	if err != nil || !slices.Equal(o.Command, []string{"sh", "-c", "true"}) || !o.JSON {
		t.Errorf("command: %+v %v", o, err)
	}
	for args, want := range map[string]string{
		"--pid x":              `--pid: "x" is not a process id`,
		"-f":                   "--follow needs --pid",
		"--host --no-host":     "do not go together",
		"-p 1 -- true":         "do not go together",
		"--":                   "no command after --",
		"--ns net:bogus":       "--ns:",
		"true":                 "a command goes after --",
		"--pid 99999999999999": "not a process id",
	} {
		_, err := parseFlags(strings.Fields(args), nil, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
}

// runJSON runs nstrace to completion and returns its status and events.
func runJSON(t *testing.T, args ...string) (int, []map[string]any) {
	t.Helper()
	cmd := nstraceCmd(args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var evs []map[string]any
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %q (stderr %s)", sc.Text(), stderr.String())
		}
		evs = append(evs, m)
	}
	return code, evs
}

func TestPrivilegedCommandTree(t *testing.T) {
	testutil.RequirePrivileged(t)
	code, evs := runJSON(t, "--json", "--", "sh", "-c", "sleep 0.1 & exec true")
	if code != 0 {
		t.Errorf("exit status %d, want true's 0", code)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e["event"].(string)+" "+e["comm"].(string)+" "+args(e))
	}
	sort.Strings(got)
	want := []string{
		"exec sh sh -c sleep 0.1 & exec true",
		"exec sleep sleep 0.1",
		"exec true true",
		"exit sleep ",
		"exit true ",
		"fork sh ",
	}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	code, _ = runJSON(t, "--json", "-e", "exit", "--", "sh", "-c", "exit 3")
	if code != 3 {
		t.Errorf("exit status %d, want 3", code)
	}
	code, _ = runJSON(t, "--json", "--", "sh", "-c", "kill -9 $$")
	if code != 128+9 {
		t.Errorf("exit status %d, want 137", code)
	}
}

func TestPrivilegedFollowForkStorm(t *testing.T) {
	testutil.RequirePrivileged(t)
	// 1,000 children forked in a tight loop, each gone at once: none may
	// escape the tree the kernel follows.
	const n = 1000
	code, evs := runJSON(t, "--json", "-e", "fork,exit", "--", "sh", "-c",
		"i=0; while [ $i -lt 1000 ]; do ( exit 0 ) & i=$((i+1)); done; wait")
	if code != 0 {
		t.Fatalf("exit status %d", code)
	}
	forks, exits := 0, 0
	for _, e := range evs {
		switch e["event"] {
		case "fork":
			forks++
		case "exit":
			exits++
		}
	}
	if forks != n || exits != n+1 {
		t.Errorf("%d forks and %d exits, want %d and %d", forks, exits, n, n+1)
	}
}
