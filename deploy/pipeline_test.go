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
	"reflect"
	"strconv"
	"strings"
	"sync"
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
	stderr syncBuffer
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
	if !testutil.Eventually(timeout, 100*time.Millisecond, cond) {
		t.Fatal(what())
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
	var promLog syncBuffer
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

// otlpValue is an OTLP JSON AnyValue.
type otlpValue struct {
	String *string                          `json:"stringValue"`
	Int    *string                          `json:"intValue"` // int64, as a string in OTLP JSON
	Double *float64                         `json:"doubleValue"`
	Bool   *bool                            `json:"boolValue"`
	Array  *struct{ Values []otlpValue }    `json:"arrayValue"`
	KVList *struct{ Values []otlpKeyValue } `json:"kvlistValue"`
}

type otlpKeyValue struct {
	Key   string    `json:"key"`
	Value otlpValue `json:"value"`
}

// plain is v as encoding/json would decode the JSON it came from:
// numbers as float64, objects as maps.
func (v otlpValue) plain() any {
	switch {
	case v.String != nil:
		return *v.String
	case v.Int != nil:
		n, _ := strconv.ParseInt(*v.Int, 10, 64)
		return float64(n)
	case v.Double != nil:
		return *v.Double
	case v.Bool != nil:
		return *v.Bool
	case v.Array != nil:
		out := []any{}
		for _, e := range v.Array.Values {
			out = append(out, e.plain())
		}
		return out
	case v.KVList != nil:
		return attrMap(v.KVList.Values)
	}
	return nil
}

func attrMap(kvs []otlpKeyValue) map[string]any {
	m := map[string]any{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value.plain()
	}
	return m
}

// otlpRecord is one log record of the file exporter's output, with its
// resource's attributes.
type otlpRecord struct {
	resource map[string]any
	attrs    map[string]any
	body     any
	time     time.Time
}

// otlpRecords reads the file exporter's OTLP JSON, one export request a
// line, as the exporter writes it: a last line without its newline is
// not written yet.
func otlpRecords(t *testing.T, path string) []otlpRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []otlpRecord
	b = b[:bytes.LastIndexByte(b, '\n')+1]
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var req struct {
			ResourceLogs []struct {
				Resource struct {
					Attributes []otlpKeyValue `json:"attributes"`
				} `json:"resource"`
				ScopeLogs []struct {
					LogRecords []struct {
						TimeUnixNano string         `json:"timeUnixNano"`
						Body         otlpValue      `json:"body"`
						Attributes   []otlpKeyValue `json:"attributes"`
					} `json:"logRecords"`
				} `json:"scopeLogs"`
			} `json:"resourceLogs"`
		}
		if err := json.Unmarshal(line, &req); err != nil {
			t.Fatalf("the file exporter wrote %q: %v", line, err)
		}
		for _, rl := range req.ResourceLogs {
			for _, sl := range rl.ScopeLogs {
				for _, r := range sl.LogRecords {
					ns, _ := strconv.ParseInt(r.TimeUnixNano, 10, 64)
					out = append(out, otlpRecord{attrMap(rl.Resource.Attributes), attrMap(r.Attributes), r.Body.plain(), time.Unix(0, ns)})
				}
			}
		}
	}
	return out
}

// collectorConfig is the log pipeline's receiver as docs/node-agent.md
// documents it.
const collectorConfig = "kubernetes/otelcol/file_log.yaml"

// buildCollector is the OpenTelemetry Collector of
// kubernetes/otelcol/builder.yaml, built once (make otelcol) and kept.
func buildCollector(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("kubernetes/otelcol/build").Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("building the OpenTelemetry Collector: %v: %s", err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// The OpenTelemetry Collector, built from the module proxy, runs the
// documented file_log receiver, as it is, on the node where the
// DaemonSet's pod runs (through containerd's CRI, from the manifest):
// reading the pod's log file under /var/log/pods, every key of an event
// arrives as a log attribute, nested objects (ns, container) as maps, the
// event's time as the record's, the line as the body, and the pod's
// identity from the file's path as resource attributes.
func TestPrivilegedCollectorReadsPodLog(t *testing.T) {
	testutil.RequirePrivileged(t)
	otelcol := buildCollector(t)
	c := testutil.StartCRI(t)
	d := testutil.RunDaemonSet(t, c)
	mark := fmt.Sprint(rand.IntN(1_000_000))
	// A line in the log, so that the collector, reading from the end, has
	// a file to watch.
	mustExec(t, "/bin/true", "before-"+mark)
	logEvent(t, d, "/bin/true before-"+mark)

	// The documented receiver and a file exporter.
	dir := t.TempDir()
	exported := filepath.Join(dir, "logs.json")
	overlay := filepath.Join(dir, "test.yaml")
	if err := os.WriteFile(overlay, []byte(`exporters:
  file:
    path: `+strconv.Quote(exported)+`
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [file_log/nstrace]
      exporters: [file]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(collectorConfig)
	var colLog syncBuffer
	col := exec.Command(otelcol, "--config=file:"+abs, "--config=file:"+overlay)
	col.Stdout, col.Stderr = &colLog, &colLog
	if err := col.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = col.Process.Kill(); _ = col.Wait() })
	waitFor(t, 60*time.Second, func() string { return "the collector never watched " + d.LogPath + ":\n" + colLog.String() }, func() bool {
		return strings.Contains(colLog.String(), "Started watching file") && strings.Contains(colLog.String(), d.LogPath)
	})

	// An exec in another pod, and one on the host.
	p := c.RunPod(t, testutil.NewPod("target-"+mark, "nstrace-test-"+mark))
	c.ExecSync(t, p.Start(t, testutil.NewContainer("app", "sleep", "3600")), "/bin/true", "pod-"+mark)
	mustExec(t, "/bin/true", "host-"+mark)
	inPod, host := "pod-"+mark, "host-"+mark
	want := map[string]map[string]any{inPod: logEvent(t, d, "/bin/true "+inPod), host: logEvent(t, d, "/bin/true "+host)}
	if ct, _ := want[inPod]["container"].(map[string]any); ct["pod"] == nil {
		t.Errorf("the exec in pod %s is logged without it: %v", p.Config.Metadata.Name, want[inPod])
	}

	var got map[string]otlpRecord
	waitFor(t, 30*time.Second, func() string {
		return fmt.Sprintf("the collector exported %d records, not both execs; its log:\n%s", len(got), colLog.String())
	}, func() bool {
		got = map[string]otlpRecord{}
		for _, r := range otlpRecords(t, exported) {
			if r.attrs["event"] == "exec" {
				got[lastArg(r.attrs)] = r
			}
		}
		return got[inPod].attrs != nil && got[host].attrs != nil
	})
	m := d.Spec.Pod.Metadata
	for _, marker := range []string{inPod, host} {
		w, r := want[marker], got[marker]
		for k, v := range w {
			if !reflect.DeepEqual(r.attrs[k], v) {
				t.Errorf("%s: attribute %s = %#v, nstrace wrote %#v", marker, k, r.attrs[k], v)
			}
		}
		if ts, err := time.Parse(time.RFC3339Nano, w["time"].(string)); err != nil || !r.time.Equal(ts) {
			t.Errorf("%s: record time %v, the event's %v (%v)", marker, r.time, w["time"], err)
		}
		for k, v := range map[string]any{"k8s.namespace.name": m.Namespace, "k8s.pod.name": m.Name, "k8s.pod.uid": m.UID,
			"k8s.container.name": d.Spec.Container.Metadata.Name, "k8s.container.restart_count": "0"} {
			if r.resource[k] != v {
				t.Errorf("%s: resource %s = %v, want %v", marker, k, r.resource[k], v)
			}
		}
		if r.attrs["log.iostream"] != "stdout" || r.attrs["log.file.path"] != d.LogPath {
			t.Errorf("%s: log.iostream %v, log.file.path %v (want stdout, %s)", marker, r.attrs["log.iostream"], r.attrs["log.file.path"], d.LogPath)
		}
		var body map[string]any
		if s, ok := r.body.(string); !ok || json.Unmarshal([]byte(s), &body) != nil || !reflect.DeepEqual(body, w) {
			t.Errorf("%s: body %#v, want the line nstrace wrote", marker, r.body)
		}
	}
	rec, _ := json.Marshal(map[string]any{"resource": got[inPod].resource, "attributes": got[inPod].attrs, "time": got[inPod].time})
	t.Logf("the exec in pod %s, as the collector exported it: %s", p.Config.Metadata.Name, rec)
	if err := col.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := col.Wait(); err != nil {
		t.Errorf("the collector after SIGTERM: %v:\n%s", err, colLog.String())
	}
}

// lastArg is an exec's last argument: the test's marker.
func lastArg(l map[string]any) string {
	if args, _ := l["args"].([]any); len(args) > 0 {
		return fmt.Sprint(args[len(args)-1])
	}
	return ""
}

func mustExec(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", argv, err, out)
	}
}

// syncBuffer is a bytes.Buffer a child process writes while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// The guide shows the collector configuration the test runs, verbatim
// but for its licence line.
func TestCollectorConfigDocumented(t *testing.T) {
	cfg, err := os.ReadFile(collectorConfig)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../docs/node-agent.md")
	if err != nil {
		t.Fatal(err)
	}
	shown := strings.TrimPrefix(string(cfg), "# SPDX-License-Identifier: Apache-2.0\n")
	if !strings.Contains(string(doc), "```yaml\n"+shown+"```\n") {
		t.Errorf("docs/node-agent.md does not show %s as it is:\n%s", collectorConfig, cfg)
	}
}
