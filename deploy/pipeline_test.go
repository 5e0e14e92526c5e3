// SPDX-License-Identifier: Apache-2.0

package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
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

// buildNstrace builds nstrace as make build does, into the test's own
// directory.
func buildNstrace(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nstrace")
	if out, err := exec.Command("make", "-C", "..", "build", "BIN="+bin).CombinedOutput(); err != nil {
		t.Fatalf("make build: %v: %s", err, out)
	}
	return bin
}

// agent is nstrace, started by startAgent.
type agent struct {
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stderr bytes.Buffer
}

// startAgent starts bin with args and returns once events flow.
func startAgent(t *testing.T, bin string, args ...string) *agent {
	t.Helper()
	ready, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer ready.Close()
	a := &agent{cmd: exec.Command(bin, append([]string{"--ready-fd=3"}, args...)...)}
	a.cmd.ExtraFiles = []*os.File{readyW}
	a.cmd.Stderr = &a.stderr
	if a.stdout, err = a.cmd.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	t.Cleanup(func() { _ = a.cmd.Process.Kill(); _ = a.cmd.Wait() })
	if _, err := ready.Read(make([]byte, 1)); err != nil {
		t.Fatalf("nstrace never became ready: %v (stderr %q)", err, a.stderr.String())
	}
	return a
}

// stop interrupts nstrace and returns its summary line.
func (a *agent) stop(t *testing.T) string {
	t.Helper()
	_ = a.cmd.Process.Signal(syscall.SIGINT)
	if err := a.cmd.Wait(); err != nil {
		t.Fatalf("nstrace after SIGINT: %v; stderr %q", err, a.stderr.String())
	}
	return strings.TrimSpace(a.stderr.String())
}

// freeAddr is a loopback address with a port nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// script writes a script named name that exits 0: its exec carries that
// name, so --comm name sees this test's execs alone.
func script(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitFor polls cond every 100 ms until it holds, or fails t after
// timeout, saying what never happened.
func waitFor(t *testing.T, timeout time.Duration, what func() string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(what())
		}
	}
}

// promSample is one series of a Prometheus instant query's result.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"` // evaluation time, "value"
}

// promQuery runs an instant query through Prometheus's HTTP API.
func promQuery(t *testing.T, addr, query string) []promSample {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		t.Fatalf("querying %s: %v", query, err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []promSample `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" {
		t.Fatalf("query %s: %v %s %s", query, err, r.Status, r.Error)
	}
	return r.Data.Result
}

func (s promSample) value(t *testing.T) float64 {
	t.Helper()
	str, _ := s.Value[1].(string)
	v, err := strconv.ParseFloat(str, 64)
	if err != nil {
		t.Fatalf("sample %v: %v", s, err)
	}
	return v
}

// A Prometheus server scrapes nstrace every second on loopback; once
// the execs stop and two scrapes after them agree, what it holds for
// nstrace_events_total is what nstrace's summary counts at exit, and the
// execs made.
func TestPrivilegedPrometheusScrapes(t *testing.T) {
	testutil.RequirePrivileged(t)
	testutil.NeedTools(t, "prometheus")
	dir := t.TempDir()
	name := fmt.Sprintf("nstp%d", rand.IntN(1_000_000))
	prog := script(t, dir, name)
	target, web := freeAddr(t), freeAddr(t)
	a := startAgent(t, buildNstrace(t), "--json", "-e", "exec", "--comm", name, "-o", filepath.Join(dir, "feed"), "--metrics-addr", target)

	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: nstrace
    static_configs:
      - targets: ["`+target+`"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	var promLog bytes.Buffer
	prom := exec.Command("prometheus", "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+web, "--log.level=warn")
	prom.Stdout, prom.Stderr = &promLog, &promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prom.Process.Kill(); _ = prom.Wait() })
	up := func() bool {
		s := promQuery(t, web, `up{job="nstrace"}`)
		return len(s) == 1 && s[0].value(t) == 1
	}
	waitFor(t, 30*time.Second, func() string { return "prometheus never scraped nstrace: " + promLog.String() }, func() bool {
		resp, err := http.Get("http://" + web + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && up()
	})

	const runs = 25
	for i := 0; i < runs; i++ {
		if out, err := exec.Command(prog).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", prog, err, out)
		}
	}
	done := float64(time.Now().UnixMilli()) / 1000

	// Two scrapes after the last exec that agree: the count has settled.
	var seen, last string
	var at float64
	var events map[string]float64
	waitFor(t, 30*time.Second, func() string { return "the scrapes never settled after the execs: last " + last }, func() bool {
		ts := promQuery(t, web, `max(timestamp(nstrace_events_total{job="nstrace"}))`)
		if len(ts) != 1 || ts[0].value(t) <= done || ts[0].value(t) == at {
			return false
		}
		at = ts[0].value(t)
		events = map[string]float64{}
		for _, s := range promQuery(t, web, `sum by (kind) (nstrace_events_total{job="nstrace"})`) {
			events[s.Metric["kind"]] = s.value(t)
		}
		seen, last = last, fmt.Sprint(events)
		return seen == last
	})
	lost := promQuery(t, web, `sum(nstrace_lost_events_total{job="nstrace"})`)
	var total float64
	for _, v := range events {
		total += v
	}
	summary := a.stop(t)
	t.Logf("prometheus: nstrace_events_total by kind %v, lost %v; nstrace: %s", events, lost, summary)
	if events["exec"] != runs || total != runs {
		t.Errorf("prometheus holds %v events by kind, want %d execs", events, runs)
	}
	if len(lost) != 1 || lost[0].value(t) != 0 {
		t.Errorf("prometheus holds lost events %v, want 0", lost)
	}
	if want := fmt.Sprintf("nstrace: %.0f events, 0 lost", total); !strings.HasPrefix(summary, want) {
		t.Errorf("summary %q, prometheus saw %q", summary, want)
	}
}
