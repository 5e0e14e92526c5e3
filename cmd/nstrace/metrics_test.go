// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/testutil"
)

// metricValue reads one sample's value from a Prometheus text exposition.
func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no %s in:\n%s", series, text)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// The metrics agree with the feed and with the summary, and pass
// promtool's checks.
func TestPrivilegedMetrics(t *testing.T) {
	testutil.RequirePrivileged(t)
	const runs = 12
	// A program whose name only this test uses: the feed counts it alone.
	name := fmt.Sprintf("nstm%d", rand.IntN(1_000_000))
	// A script, not a copy of true: busybox's applets go by their name.
	prog := writeScript(t, name)
	addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(20000))
	var stderr bytes.Buffer
	out := filepath.Join(t.TempDir(), "feed")
	cmd, _ := startRaw(t, &stderr, "--json", "-e", "exec", "--comm", name, "-o", out, "--metrics-addr", addr)
	for i := 0; i < runs; i++ {
		if err := exec.Command(prog).Run(); err != nil {
			t.Fatal(err)
		}
	}
	var text string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			text = string(body)
			if strings.Contains(text, fmt.Sprintf(`nstrace_events_total{kind="exec"} %d`, runs)) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics never showed %d execs: %v\n%s", runs, err, text)
		}
	}
	promtoolCheck(t, text)
	for _, r := range []string{"ring_buffer_full", "pending_full", "clone_flags_full", "traced_set_full"} {
		if v := metricValue(t, text, `nstrace_lost_events_total{reason="`+r+`"}`); v != 0 {
			t.Errorf("lost %s: %v", r, v)
		}
	}
	if !strings.Contains(text, "nstrace_build_info{") || metricValue(t, text, "nstrace_ring_buffer_size_bytes") != 4<<20 {
		t.Errorf("build info or ring buffer size missing:\n%s", text)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	feed, _ := os.ReadFile(out)
	if n := strings.Count(string(feed), `"event":"exec"`); n != runs {
		t.Errorf("the feed has %d execs, the metrics %d", n, runs)
	}
	if want := fmt.Sprintf("nstrace: %d events, 0 lost", runs); !strings.HasPrefix(stderr.String(), want) {
		t.Errorf("summary %q, want %q", stderr.String(), want)
	}
}
