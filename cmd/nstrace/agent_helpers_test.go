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
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/procfs"
)

// startUnder starts nstrace as the last arguments of wrapper (unshare,
// setpriv, runc ...), with its JSON or human lines on the returned pipe,
// and returns once it is attached.
func startUnder(t *testing.T, wrapper []string, stderr io.Writer, args ...string) (*exec.Cmd, io.ReadCloser) {
	t.Helper()
	return startArgv(t, append(append(append([]string{}, wrapper...), os.Args[0], "--ready-fd=3"), args...), stderr)
}

// startArgv starts argv, which runs nstrace with --ready-fd=3, and
// returns once it is attached.
func startArgv(t *testing.T, argv []string, stderr io.Writer) (*exec.Cmd, io.ReadCloser) {
	t.Helper()
	ready, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer ready.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	cmd.ExtraFiles = []*os.File{readyW}
	var errs bytes.Buffer // what it said, should it never get ready
	cmd.Stderr = io.MultiWriter(stderr, &errs)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if _, err := ready.Read(make([]byte, 1)); err != nil {
		_ = cmd.Process.Kill()
		werr := cmd.Wait()
		t.Fatalf("%v never became ready: %v (%v; stderr %q)", argv, err, werr, errs.String())
	}
	return cmd, out
}

// feedUnder is startFeed for nstrace run under wrapper.
func feedUnder(t *testing.T, wrapper []string, args ...string) *feed {
	t.Helper()
	return feedArgv(t, append(append(append([]string{}, wrapper...), os.Args[0], "--ready-fd=3"), args...))
}

// feedArgv is startFeed for argv, which runs nstrace with --ready-fd=3.
func feedArgv(t *testing.T, argv []string) *feed {
	t.Helper()
	f := &feed{lines: make(chan map[string]any, 100000), stderr: &bytes.Buffer{}}
	var out io.ReadCloser
	f.cmd, out = startArgv(t, argv, f.stderr)
	go readJSONLines(out, f.lines)
	return f
}

// readJSONLines parses NDJSON from r into lines until r ends.
func readJSONLines(r io.Reader, lines chan<- map[string]any) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			m = map[string]any{"invalid": sc.Text()}
		}
		lines <- m
	}
	close(lines)
}

// run runs a command and fails t if it fails.
func mustRun(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", argv, err, out)
	}
}

// nsLinks reads /proc/PID/ns/TYPE for the given types.
func nsLinks(t *testing.T, pid string, types ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, typ := range types {
		l, err := os.Readlink("/proc/" + pid + "/ns/" + typ)
		if err != nil {
			t.Fatal(err)
		}
		out[typ] = l
	}
	return out
}

// execArgs is a match for the exec of exactly this argument vector.
func execArgs(argv ...string) func(map[string]any) bool {
	want := strings.Join(argv, " ")
	return func(l map[string]any) bool { return l["event"] == "exec" && args(l) == want }
}

// inNewCgroup is a wrapper that moves the command into a new cgroup v2
// of its own, as a container is, before it runs: in a cgroup namespace
// made after that, the host's hierarchy is above the namespace's root.
func inNewCgroup(t *testing.T) []string {
	t.Helper()
	root, ok := procfs.Cgroup2Mount("/proc/self/mountinfo")
	if !ok {
		t.Fatal("no cgroup v2 hierarchy mounted")
	}
	dir := filepath.Join(root, fmt.Sprintf("nstrace-test-%d", rand.IntN(1_000_000)), "agent")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if os.Remove(dir) == nil || os.IsNotExist(os.Remove(dir)) {
				break
			}
		}
		_ = os.Remove(filepath.Dir(dir))
	})
	return []string{"sh", "-c", `echo $$ >"$0/cgroup.procs" && exec "$@"`, dir}
}

// ownCgroup is this process's cgroup v2 path.
func ownCgroup(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	t.Fatal("no cgroup v2 line in /proc/self/cgroup")
	return ""
}
