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

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/testutil"
)

func TestParseNSSpec(t *testing.T) {
	cases := []struct {
		in   string
		want nsSpec
		err  string
	}{
		{"4026532397", nsSpec{anyT: true, inode: 4026532397}, ""},
		{"net:4026532397", nsSpec{typ: event.NSNet, inode: 4026532397}, ""},
		{"pid:4026532397", nsSpec{typ: event.NSPid, inode: 4026532397}, ""},
		{"pid:4242", nsSpec{anyT: true, pid: 4242}, ""},
		{"net:pid:4242", nsSpec{typ: event.NSNet, pid: 4242}, ""},
		{"pid_for_children:pid:1", nsSpec{typ: event.NSPidForChildren, pid: 1}, ""},
		{"bogus:4026532397", nsSpec{}, `unknown namespace type "bogus"`},
		{"net:x", nsSpec{}, "not an inode or pid"},
		{"net:pid:4026532397", nsSpec{}, "is not a process id"},
		{"net:foo:1", nsSpec{}, "want TYPE:pid:PID"},
		{"a:b:c:d", nsSpec{}, "want INODE"},
		{"0", nsSpec{}, "not an inode"},
	}
	for _, c := range cases {
		got, err := parseNSSpec(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %+v %v, want %+v", c.in, got, err, c.want)
		}
	}
}

func TestScopeFlags(t *testing.T) {
	o, err := parseFlags([]string{"-p", "1,22", "-f", "--comm", "sh", "--no-host"}, nil)
	if err != nil || !slices.Equal(o.pids, []uint32{1, 22}) || !o.follow || !o.noHost || o.comms[0] != "sh" {
		t.Errorf("%+v %v", o, err)
	}
	o, err = parseFlags([]string{"--json", "--", "sh", "-c", "true"}, nil)
	if err != nil || !slices.Equal(o.command, []string{"sh", "-c", "true"}) || !o.json {
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
		_, err := parseFlags(strings.Fields(args), nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
}

func TestUserFilter(t *testing.T) {
	host := event.NS{1, 2, 3, 4, 5, 5, 6, 6, 7, 8}
	in := event.Event{Kind: event.Exec, Comm: []byte("sh"), NS: host}
	out := in
	out.NS[event.NSNet] = 99
	f := userFilter{comms: []string{"sh", "ps"}}
	if !f.pass(&in) || f.pass(&event.Event{Comm: []byte("bash")}) {
		t.Error("--comm")
	}
	f = userFilter{host: host, onlyHost: true}
	if !f.pass(&in) || f.pass(&out) {
		t.Error("--host")
	}
	f = userFilter{host: host, notHost: true}
	if f.pass(&in) || !f.pass(&out) {
		t.Error("--no-host")
	}
	// --ns-changes: a fork into a new net namespace passes, a plain fork,
	// an exec and a setns that changed nothing do not.
	f = userFilter{nsChanges: true}
	moved := event.Event{Kind: event.Fork, NS: host, ChildNS: out.NS}
	plain := event.Event{Kind: event.Fork, NS: host, ChildNS: host}
	noop := event.Event{Kind: event.Setns, NS: host, PrevNS: host}
	if !f.pass(&moved) || f.pass(&plain) || f.pass(&in) || f.pass(&noop) {
		t.Error("--ns-changes")
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
