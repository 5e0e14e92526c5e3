// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/testutil"
)

// stormCmd is the test binary as an exec storm of /bin/true MARKER.
func stormCmd(n, workers int, marker, done string) []string {
	return []string{"env", fmt.Sprintf("%s=%d %d %s %s", stormEnv, n, workers, marker, done), os.Args[0]}
}

// countMarked counts JSON exec events of /bin/true MARKER, and the lost
// events' counts, in r.
func countMarked(t *testing.T, r io.Reader, marker string) (execs, lost int) {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %q", sc.Text())
		}
		switch {
		case m["event"] == "lost":
			lost += int(m["count"].(float64))
		case m["event"] == "exec" && args(m) == "/bin/true "+marker:
			execs++
		}
	}
	return execs, lost
}

func TestPrivilegedStormAllReported(t *testing.T) {
	testutil.RequirePrivileged(t)
	// 20,000 execs; fewer under software emulation (make test-kernels).
	n := 20000
	if s := os.Getenv("NSTRACE_STORM_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	marker := fmt.Sprintf("storm-%d", rand.IntN(1_000_000))
	for _, view := range []string{"--json", "-e"} {
		t.Run(view, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "feed")
			args := []string{"-e", "exec", "-o", out}
			if view == "--json" {
				args = append(args, "--json")
			} else {
				out = "" // the human view goes to a file too; the count comes from the summary
			}
			if out == "" {
				args = []string{"-e", "exec", "-o", os.DevNull}
			}
			f := startFeed(t, args...)
			sc := stormCmd(n, 2, marker, "")
			if b, err := exec.Command(sc[0], sc[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("storm: %v: %s", err, b)
			}
			time.Sleep(200 * time.Millisecond)
			if hwm := peakRSS(t, f.cmd.Process.Pid); hwm > 64<<20 {
				t.Errorf("peak RSS %d MiB under the storm", hwm>>20)
			} else {
				t.Logf("peak RSS %.1f MiB", float64(hwm)/(1<<20))
			}
			_ = f.cmd.Process.Signal(syscall.SIGTERM)
			if err := f.cmd.Wait(); err != nil {
				t.Fatalf("nstrace: %v: %s", err, f.stderr)
			}
			if !strings.Contains(f.stderr.String(), " 0 lost") {
				t.Errorf("losses under the storm: %s", f.stderr)
			}
			if out != "" {
				fh, err := os.Open(out)
				if err != nil {
					t.Fatal(err)
				}
				defer fh.Close()
				if execs, lost := countMarked(t, fh, marker); execs != n || lost != 0 {
					t.Errorf("%d of %d execs reported, %d lost", execs, n, lost)
				}
			} else {
				var seen int
				fmt.Sscanf(f.stderr.String(), "nstrace: %d events", &seen)
				if seen < n {
					t.Errorf("%d events for a storm of %d execs: %s", seen, n, f.stderr)
				}
			}
		})
	}
}

func TestPrivilegedOverloadLossIsExact(t *testing.T) {
	testutil.RequirePrivileged(t)
	// Far more than a page of ring buffer holds; fewer under software
	// emulation, where a page still overflows many times over.
	n := 3000
	if os.Getenv("NSTRACE_STORM_N") != "" {
		n = 500
	}
	marker := fmt.Sprintf("overload-%d", rand.IntN(1_000_000))
	done := filepath.Join(t.TempDir(), "done")
	// A one-page ring buffer and a reader that does not read: the output
	// pipe is left full until the storm is over.
	cmd := nstraceCmd(append([]string{"--json", "-e", "exec", "--buffer-size", "4K", "--"}, stormCmd(n, 2, marker, done)...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(done); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("storm did not finish")
		}
	}
	// Caused: the storm's own exec (env, then the test binary: its args
	// are not "/bin/true MARKER") and n execs of /bin/true MARKER.
	execs, lost := countMarked(t, stdout, marker)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nstrace: %v: %s", err, stderr.String())
	}
	var seen, total int
	fmt.Sscanf(stderr.String(), "nstrace: %d events, %d lost", &seen, &total)
	if lost == 0 || lost != total {
		t.Errorf("lost events in the stream %d, in the summary %d (%s)", lost, total, stderr.String())
	}
	t.Logf("%d execs caused, %d reported, %d lost", n+2, seen, total)
	// Every exec the command caused (env, the storm binary, n of
	// /bin/true) was either reported or counted lost, exactly.
	if execs+lost < n || execs+lost > n+2 {
		t.Errorf("reported %d + lost %d = %d, caused %d (+2 for the storm's own execs)", execs, lost, execs+lost, n)
	}
	if seen+total != n+2 {
		t.Errorf("summary: %d events + %d lost != %d execs caused", seen, total, n+2)
	}
}

// peakRSS reads a process's peak resident set size (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscan(rest, &kb)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

func TestPrivilegedInterruptUnderOverload(t *testing.T) {
	testutil.RequirePrivileged(t)
	var stderr bytes.Buffer
	cmd, out := startRaw(t, &stderr, "--json", "--buffer-size", "4K")
	// A reader that never reads: nstrace is stuck behind a full pipe and
	// its ring buffer overflows; a signal must still end it at once.
	defer out.Close()
	n := 2000
	if os.Getenv("NSTRACE_STORM_N") != "" {
		n = 500 // software emulation: still many pages of ring buffer
	}
	sc := stormCmd(n, 2, "interrupt", "")
	if b, err := exec.Command(sc[0], sc[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("storm: %v: %s", err, b)
	}
	start := time.Now()
	_ = cmd.Process.Signal(os.Interrupt)
	werr := make(chan error, 1)
	go func() { werr <- cmd.Wait() }()
	select {
	case err := <-werr:
		t.Logf("ended %v after SIGINT", time.Since(start))
		if err != nil {
			t.Errorf("nstrace after SIGINT: %v; stderr %q", err, stderr.String())
		}
	case <-time.After(3 * time.Second):
		t.Fatal("nstrace did not end after SIGINT while its output was blocked")
	}
	var seen, lost int
	if n, _ := fmt.Sscanf(stderr.String(), "nstrace: %d events, %d lost", &seen, &lost); n != 2 || lost == 0 {
		t.Errorf("summary %q: want the events lost behind the blocked output counted", stderr.String())
	}
}

func TestPrivilegedNothingLeaks(t *testing.T) {
	testutil.RequirePrivileged(t)
	before := testutil.LoadedPrograms()

	t.Run("signal", func(t *testing.T) {
		f := startFeed(t, "--json")
		fresh := 0
		for id := range testutil.LoadedPrograms() {
			if _, old := before[id]; !old {
				fresh++
			}
		}
		if fresh == 0 {
			t.Fatal("nstrace's programs are not visible while it runs")
		}
		_ = f.cmd.Process.Signal(syscall.SIGTERM)
		for range f.lines {
		}
		if err := f.cmd.Wait(); err != nil {
			t.Fatalf("%v: %s", err, f.stderr)
		}
		testutil.WaitProgramsGone(t, before)
	})
	t.Run("closed pipe", func(t *testing.T) {
		cmd, out := startRaw(t, io.Discard, "--json")
		if err := exec.Command("true").Run(); err != nil {
			t.Fatal(err)
		}
		_, _ = bufio.NewReader(out).ReadString('\n')
		out.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		testutil.WaitProgramsGone(t, before)
	})
	t.Run("error after load", func(t *testing.T) {
		cmd := nstraceCmd("-o", filepath.Join(t.TempDir(), "no", "such", "dir"))
		b, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(b), "opening the output") {
			t.Fatalf("%v: %s", err, b)
		}
		testutil.WaitProgramsGone(t, before)
	})
}

func TestPrivilegedNotRoot(t *testing.T) {
	testutil.RequirePrivileged(t)
	// A copy of the test binary that an unprivileged user may run.
	dir, err := os.MkdirTemp("", "nstrace-notroot")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "nstrace.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-e", "exec")
	cmd.Env = []string{mainEnv + "=1"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("as nobody: %v, want exit 1; stderr %q", err, stderr.String())
	}
	msg := strings.TrimSpace(stderr.String())
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "root") || !strings.Contains(msg, "CAP_BPF") {
		t.Errorf("as nobody: %q, want one line naming root and CAP_BPF", msg)
	}
}

func TestPrivilegedHostileNames(t *testing.T) {
	testutil.RequirePrivileged(t)
	// A program whose name and arguments try to take over the terminal:
	// a copy of this test binary, told to exit at once (a symlink to
	// /bin/true would not do where that is busybox, which goes by name).
	dir := t.TempDir()
	name := "evil\x1b[2J\x1b]0;pwn\x07\nx"
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), self, 0o755); err != nil {
		t.Fatal(err)
	}

	marker := fmt.Sprintf("hostile-%d", rand.IntN(1_000_000))
	hostileArgs := []string{marker, "line\nbreak", "bad\xff\xfeutf8", "\u202eright-to-left", "tab\there"}

	humanOut := filepath.Join(t.TempDir(), "human")
	human := startFeed(t, "-e", "exec", "-o", humanOut)
	jsonFeed := startFeed(t, "--json", "-e", "exec")
	cmd := exec.Command(filepath.Join(dir, name), hostileArgs...)
	cmd.Env = append(os.Environ(), exit0Env+"=1")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	ev := jsonFeed.next(t, func(l map[string]any) bool {
		a, _ := l["args"].([]any)
		return l["event"] == "exec" && len(a) > 1 && a[1] == marker
	})
	if ev["comm"] != name[:15] {
		t.Errorf("comm %q, want %q", ev["comm"], name[:15])
	}
	raw := ev["args_b64"].([]any)
	for i, want := range hostileArgs {
		got, _ := base64.StdEncoding.DecodeString(raw[i+1].(string))
		if string(got) != want {
			t.Errorf("args_b64[%d] = %q, want %q", i+1, got, want)
		}
	}
	if ev["filename"] != filepath.Join(dir, name) {
		t.Errorf("filename %q", ev["filename"])
	}
	// The host-wide human feed, which saw the same exec.
	time.Sleep(200 * time.Millisecond)
	_ = human.cmd.Process.Signal(os.Interrupt)
	if err := human.cmd.Wait(); err != nil {
		t.Fatalf("human feed: %v: %s", err, human.stderr)
	}
	text, err := os.ReadFile(humanOut)
	if err != nil {
		t.Fatal(err)
	}
	checkHostileLine(t, string(text), marker)

	// A COMMAND run: the header, env's exec, then the hostile program's,
	// and nothing else.
	cmdH := nstraceCmd(append([]string{"-e", "exec", "--", "env", exit0Env + "=1", filepath.Join(dir, name)}, hostileArgs...)...)
	out, err := cmdH.Output()
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n"); len(lines) != 3 {
		t.Fatalf("want a header and two exec lines, got %d lines: %q", len(lines), out)
	}
	checkHostileLine(t, string(out), marker)
}

// checkHostileLine finds the hostile program's exec in a human view and
// checks that every hostile byte is escaped.
func checkHostileLine(t *testing.T, text, marker string) {
	t.Helper()
	var line string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, " "+marker+" ") {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no line with %s in the human view:\n%q", marker, text)
	}
	for _, c := range []byte(line) {
		if c < 0x20 || c == 0x7f {
			t.Fatalf("control byte %#x in the human view: %q", c, line)
		}
	}
	for _, want := range []string{`evil\x1b[2J\x1b]`, `line\nbreak`, `bad\xff\xfeutf8`, `\u{202e}right-to-left`, `tab\there`} {
		if !strings.Contains(line, want) {
			t.Errorf("human line lacks %s: %s", want, line)
		}
	}
}
