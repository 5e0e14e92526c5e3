// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
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

	"github.com/nstrace/nstrace/internal/storm"
	"github.com/nstrace/nstrace/internal/testutil"
)

func scrapeMetrics(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scraping: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sumSeries adds up every sample of a metric.
func sumSeries(text, name string) float64 {
	var t float64
	for _, m := range regexp.MustCompile(`(?m)^`+name+`(\{[^}]*\})? (\S+)$`).FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		t += v
	}
	return t
}

func promtoolCheck(t *testing.T, text string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is needed (apt-get install prometheus)")
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(text)
	if b, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v: %s", err, b)
	}
}

// A reader that stops: the ring buffer fills, the metrics show it full and
// the losses by reason; once drained, the feed, the metrics and the
// summary agree on every count. The build info is --version's.
func TestPrivilegedMetricsUnderLoss(t *testing.T) {
	testutil.RequirePrivileged(t)
	name := fmt.Sprintf("nstl%d", rand.IntN(1_000_000))
	prog := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(prog, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	const size = 16 << 10
	addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(20000))
	var stderr bytes.Buffer
	cmd, out := startRaw(t, &stderr, "--json", "-e", "exec", "--comm", name, "--buffer-size", "16K", "--metrics-addr", addr)

	// Nobody reads the feed: its pipe fills (about 300 lines), then the
	// ring buffer (about 40 records). Fewer execs under software emulation
	// (make test-kernels), where they are tens of times slower.
	runs := 3000
	if os.Getenv("NSTRACE_STORM_N") != "" {
		runs = 800
	}
	if err := storm.Run(runs, 2, prog, "loss"); err != nil {
		t.Fatal(err)
	}
	full := scrapeMetrics(t, addr)
	promtoolCheck(t, full)
	if v := metricValue(t, full, `nstrace_lost_events_total{reason="ring_buffer_full"}`); v == 0 {
		t.Errorf("a stopped reader and %d execs in a 16 KiB buffer lost nothing:\n%s", runs, full)
	}
	if q := metricValue(t, full, "nstrace_ring_buffer_queued_bytes"); q < size/2 || q > size {
		t.Errorf("ring buffer queued %v bytes of %d with its reader stopped", q, size)
	}
	if v := metricValue(t, full, "nstrace_ring_buffer_size_bytes"); v != size {
		t.Errorf("ring buffer size %v, want %d", v, size)
	}

	// Drain, and wait for the counts to settle.
	type tally struct{ events, lost int }
	lines := make(chan tally)
	go func() {
		var n tally
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l struct {
				Event string `json:"event"`
				Count int    `json:"count"`
			}
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Errorf("not JSON: %q", sc.Text())
			}
			if l.Event == "lost" {
				n.lost += l.Count
			} else {
				n.events++
			}
		}
		lines <- n
	}()
	var text string
	for deadline, last := time.Now().Add(10*time.Second), ""; ; time.Sleep(300 * time.Millisecond) {
		text = scrapeMetrics(t, addr)
		counts := fmt.Sprint(sumSeries(text, "nstrace_events_total"), sumSeries(text, "nstrace_lost_events_total"))
		if counts == last && metricValue(t, text, "nstrace_ring_buffer_queued_bytes") == 0 {
			break
		}
		last = counts
		if time.Now().After(deadline) {
			t.Fatalf("counts never settled:\n%s", text)
		}
	}
	promtoolCheck(t, text)
	events, lost := sumSeries(text, "nstrace_events_total"), sumSeries(text, "nstrace_lost_events_total")
	if v := metricValue(t, text, "nstrace_undecodable_records_total"); v != 0 {
		t.Errorf("undecodable records: %v", v)
	}
	execs := metricValue(t, text, `nstrace_events_total{kind="exec"}`)
	if execs+lost < float64(runs) || execs == 0 {
		t.Errorf("exec events %v + lost %v, want at least the %d execs made", execs, lost, runs)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	n := <-lines
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if float64(n.events) != events || float64(n.lost) != lost {
		t.Errorf("the feed has %d events and %d lost, the metrics %v and %v", n.events, n.lost, events, lost)
	}
	if want := fmt.Sprintf("nstrace: %.0f events, %.0f lost (", events, lost); !strings.HasPrefix(stderr.String(), want) {
		t.Errorf("summary %q, want it to start %q", stderr.String(), want)
	}

	// The build info is what --version says.
	var version bytes.Buffer
	if code := mainExit([]string{"--version"}, &version, io.Discard); code != 0 {
		t.Fatalf("--version: exit %d", code)
	}
	info := regexp.MustCompile(`(?m)^nstrace_build_info\{(.*)\} 1$`).FindStringSubmatch(text)
	if info == nil {
		t.Fatalf("no build info:\n%s", text)
	}
	// nstrace VERSION, commit COMMIT, GO, cilium/ebpf V, BPF object sha256 HASH.
	for _, line := range strings.Split(strings.TrimSpace(version.String()), "\n") {
		f := strings.Fields(line)
		if line == "commit " || len(f) == 0 {
			continue // no commit in a plain go test build
		}
		if v := f[len(f)-1]; !strings.Contains(info[1], `"`+v+`"`) {
			t.Errorf("build info %s lacks %q from --version", info[1], v)
		}
	}
}
