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

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/launch"
	"github.com/nstrace/nstrace/internal/storm"
	"github.com/nstrace/nstrace/internal/testutil"
)

// mainEnv makes the test binary run nstrace's main: end-to-end tests start
// the real command, flags, signals and all.
const mainEnv = "NSTRACE_TEST_RUN_MAIN"

// stormEnv makes the test binary an exec storm: "N WORKERS MARKER DONEFILE".
const stormEnv = "NSTRACE_TEST_STORM"

// exit0Env makes the test binary exit 0 at once: a harmless program to
// run under a hostile name.
const exit0Env = "NSTRACE_TEST_EXIT0"

func TestMain(m *testing.M) {
	if os.Getenv(exit0Env) == "1" {
		os.Exit(0)
	}
	// The storm comes first: it runs under a traced command, where the
	// environment also asks for nstrace's main.
	if spec := os.Getenv(stormEnv); spec != "" {
		var n, w int
		var marker, done string
		fmt.Sscan(spec, &n, &w, &marker, &done)
		if err := storm.Run(n, w, "/bin/true", marker); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if done != "" {
			_ = os.WriteFile(done, nil, 0o644)
		}
		os.Exit(0)
	}
	if os.Getenv(mainEnv) == "1" {
		args := os.Args[1:]
		// The hook path the suite is asked to use (the kernel matrix
		// runs it once per path); a test's own --syscall-hooks, later,
		// wins. Not for `nstrace ns`, nor for the gate child that
		// becomes a COMMAND: its arguments are the command's.
		gate := os.Getenv(launch.GateEnv) == "1"
		if h := os.Getenv(testutil.HooksEnv); h != "" && !gate && (len(args) == 0 || args[0] != "ns") {
			args = append([]string{"--syscall-hooks=" + h}, args...)
		}
		os.Exit(mainExit(args, os.Stdout, os.Stderr))
	}
	code := m.Run()
	// The container daemons the tests started, and only those.
	testutil.StopDaemons()
	os.Exit(code)
}

func nstraceCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	return cmd
}

func TestParseFlags(t *testing.T) {
	all := event.AllKinds()
	cases := []struct {
		args  []string
		kinds event.KindSet
		err   string
	}{
		{nil, event.DefaultKinds(), ""},
		{[]string{"-e", "exec"}, event.KindSet(0).Add(event.Exec), ""},
		{[]string{"--events=fork,exit"}, event.KindSet(0).Add(event.Fork).Add(event.Exit), ""},
		{[]string{"-e", "all"}, all, ""},
		{[]string{"--setns"}, event.KindSet(0).Add(event.Setns), ""},
		{[]string{"--setns", "--unshare"}, event.KindSet(0).Add(event.Setns).Add(event.Unshare), ""},
		{[]string{"-e", "exec", "--setns"}, event.KindSet(0).Add(event.Exec).Add(event.Setns), ""},
		{[]string{"-e", "bogus"}, 0, `unknown event "bogus" (valid: fork, exec, exit, clone, unshare, setns, comm, uid, sid, ptrace, core, nonzeroexit, all)`},
		{[]string{"-e", ""}, 0, "no events selected"},
		{[]string{"--bogus"}, 0, "unknown flag: --bogus"},
		{[]string{"extra"}, 0, `unexpected argument "extra"`},
		{[]string{"--man", "extra"}, 0, `unexpected argument "extra"`},
		{[]string{"--version", "extra"}, 0, `unexpected argument "extra"`},
		{[]string{"--buffer-size", "3M"}, 0, "must be a power of two"},
		{[]string{"--buffer-size", "x"}, 0, `"x" is not a size`},
	}
	for _, c := range cases {
		o, err := parseFlags(c.args, io.Discard, io.Discard)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: error %v, want %q", c.args, err, c.err)
			}
			if _, ok := err.(usageError); !ok {
				t.Errorf("%v: %T is not a usage error", c.args, err)
			}
			continue
		}
		if err != nil || o.Kinds != c.kinds {
			t.Errorf("%v: kinds %b err %v, want %b", c.args, o.Kinds, err, c.kinds)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{"8M": 8 << 20, "64K": 64 << 10, "1G": 1 << 30, "4096": 4096, "16m": 16 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-1M", "M", "1T", "9999999G"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

func TestUsageErrorsExit2WithOneLine(t *testing.T) {
	for _, args := range [][]string{{"-e", "bogus"}, {"--pid"}, {"--buffer-size", "0"}, {"--nope"}} {
		var stderr bytes.Buffer
		if code := mainExit(args, io.Discard, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "nstrace: ") || !strings.Contains(lines[1], "--help") {
			t.Errorf("%v: stderr %q, want one error line and a hint", args, stderr.String())
		}
	}
	var stderr bytes.Buffer
	if code := mainExit([]string{"--help"}, io.Discard, &stderr); code != 0 || !strings.Contains(stderr.String(), "--events") {
		t.Errorf("--help: exit %d, %q", code, stderr.String())
	}
}

// feed is a running nstrace with its JSON lines.
type feed struct {
	cmd    *exec.Cmd
	lines  chan map[string]any
	stderr *bytes.Buffer
}

// startFeed starts nstrace and returns once it is attached, with its
// output parsed as JSON lines as they come.
func startFeed(t *testing.T, args ...string) *feed {
	t.Helper()
	f := &feed{lines: make(chan map[string]any, 100000), stderr: &bytes.Buffer{}}
	var out io.ReadCloser
	f.cmd, out = startRaw(t, f.stderr, args...)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"invalid": sc.Text()}
			}
			f.lines <- m
		}
		close(f.lines)
	}()
	return f
}

// next returns the first line for which match is true.
func (f *feed) next(t *testing.T, match func(map[string]any) bool) map[string]any {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-f.lines:
			if !ok {
				t.Fatalf("nstrace output ended; stderr: %s", f.stderr)
			}
			if _, bad := m["invalid"]; bad {
				t.Fatalf("a line is not JSON: %q", m["invalid"])
			}
			if match(m) {
				return m
			}
		case <-timeout:
			t.Fatal("timed out waiting for an event")
		}
	}
}

func args(m map[string]any) string {
	a, _ := m["args"].([]any)
	s := make([]string, len(a))
	for i, v := range a {
		s[i], _ = v.(string)
	}
	return strings.Join(s, " ")
}

func TestPrivilegedEndToEndJSON(t *testing.T) {
	testutil.RequirePrivileged(t)
	f := startFeed(t, "--json", "-e", "exec,exit")
	m := fmt.Sprintf("%d.%d", 1000+rand.IntN(1000), rand.IntN(1000000))
	sh := exec.Command("unshare", "--fork", "--kill-child", "--pid", "--mount-proc", "--net", "sh", "-c", "sleep "+m+" & wait")
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sh.Process.Kill(); _ = sh.Wait() }()

	shExec := f.next(t, func(l map[string]any) bool { return l["event"] == "exec" && args(l) == "sh -c sleep "+m+" & wait" })
	if shExec["nspid"] != 1.0 || shExec["comm"] != "sh" {
		t.Errorf("sh in a new pid namespace: nspid %v comm %v, want 1 sh", shExec["nspid"], shExec["comm"])
	}
	sl := f.next(t, func(l map[string]any) bool { return l["event"] == "exec" && args(l) == "sleep "+m })
	ns := sl["ns"].(map[string]any)
	pid := int(sl["pid"].(float64))
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("net:[%d]", int64(ns["net"].(float64))); link != want {
		t.Errorf("feed says %s, /proc says %s", want, link)
	}
	if sl["nspid"] != 2.0 {
		t.Errorf("sleep nspid %v, want 2", sl["nspid"])
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	ex := f.next(t, func(l map[string]any) bool { return l["event"] == "exit" && int(l["pid"].(float64)) == pid })
	if ex["signal"] != float64(syscall.SIGTERM) {
		t.Errorf("exit %v", ex)
	}

	// SIGINT: detach, summary on stderr, exit 0.
	_ = f.cmd.Process.Signal(os.Interrupt)
	for range f.lines {
	}
	if err := f.cmd.Wait(); err != nil {
		t.Errorf("nstrace after SIGINT: %v; stderr %s", err, f.stderr)
	}
	if !strings.Contains(f.stderr.String(), " lost") {
		t.Errorf("no summary on stderr: %q", f.stderr)
	}
}

func TestPrivilegedEndToEndHuman(t *testing.T) {
	testutil.RequirePrivileged(t)
	ready, readyW, _ := os.Pipe()
	cmd := nstraceCmd("-e", "exec", "--ready-fd=3")
	cmd.ExtraFiles = []*os.File{readyW}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	_, _ = ready.Read(make([]byte, 1))
	if err := exec.Command("unshare", "-fp", "--mount-proc", "sh", "-c", "ps >/dev/null").Run(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nstrace after SIGTERM: %v: %s", err, stderr.String())
	}
	var shLine string
	for _, l := range humanLines(t, out.String()) {
		if l["EVENT"] == "exec" && l["COMM"] == "sh" && strings.Contains(l["INFO"], "-c ps") {
			shLine = l["INFO"]
			if l["NSPID"] != "1" {
				t.Errorf("sh NSPID column %q, want 1: %v", l["NSPID"], l)
			}
			if c, ok := l["CONTAINER"]; ok && c != "-" {
				t.Errorf("sh outside any container shows container %q", c)
			}
			if !strings.Contains(l["INFO"], "pid:[") {
				t.Errorf("sh line does not show its pid namespace: %v", l)
			}
		}
	}
	if shLine == "" || !strings.HasPrefix(out.String(), "TIME ") {
		t.Errorf("no sh exec line in:\n%s", out.String())
	}
}

// humanLines splits the human view into its columns, named by the header
// in force (the CONTAINER column appears once a container is seen); INFO
// is the rest of the line.
func humanLines(t *testing.T, text string) []map[string]string {
	t.Helper()
	var cols []string
	var out []map[string]string
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == "TIME" {
			cols = f[:len(f)-1] // INFO takes the rest
			continue
		}
		if cols == nil || len(f) < len(cols) || f[1] == "LOST" {
			continue
		}
		m := map[string]string{}
		for i, c := range cols {
			m[c] = f[i]
		}
		m["INFO"] = strings.Join(f[len(cols):], " ")
		out = append(out, m)
	}
	if cols == nil {
		t.Fatalf("no header in the human view:\n%s", text)
	}
	return out
}

// startRaw starts nstrace with its stdout as a pipe for the test to read,
// and returns once it is attached.
func startRaw(t *testing.T, stderr io.Writer, args ...string) (*exec.Cmd, io.ReadCloser) {
	t.Helper()
	return startUnder(t, nil, stderr, args...)
}

func TestPrivilegedClosedPipeEndsQuietly(t *testing.T) {
	testutil.RequirePrivileged(t)
	var stderr bytes.Buffer
	cmd, out := startRaw(t, &stderr, "--json")
	// Read one line, like `head -1`, then close the pipe; nstrace, idle
	// after that, must notice on its own.
	if err := exec.Command("true").Run(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !json.Valid([]byte(line)) {
		t.Fatalf("first line %q: %v", line, err)
	}
	out.Close()
	werr := make(chan error, 1)
	go func() { werr <- cmd.Wait() }()
	select {
	case err := <-werr:
		if err != nil {
			t.Errorf("nstrace after its reader left: %v", err)
		}
	case <-time.After(15 * time.Second): // emulated guests detach slowly
		t.Fatal("nstrace did not end after its stdout closed")
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr not quiet: %q", stderr.String())
	}
}
