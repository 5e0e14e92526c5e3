// SPDX-License-Identifier: Apache-2.0

package output

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/ns"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var host = ns.Set{4026531835, 4026531839, 4026531840, 4026531992, 4026531836, 4026531836, 4026531834, 4026531834, 4026531837, 4026531838}

func at() time.Time { return time.Date(2026, 11, 22, 9, 30, 1, 123456789, time.UTC) }

func inContainer() ns.Set {
	set := host
	set[ns.Pid] = 4026532397
	set[ns.PidForChildren] = 4026532397
	set[ns.Net] = 4026532400
	return set
}

// samples covers every kind, in the shapes users see.
func samples() []*event.Event {
	base := event.Event{Time: at(), PID: 4242, TID: 4242, PPID: 4241, NSPID: 4242, Comm: []byte("unshare"), NS: host, CgroupID: 1, Cgroup: "/"}
	exec := base
	exec.Kind, exec.Comm, exec.NSPID, exec.NS = event.Exec, []byte("sh"), 1, inContainer()
	exec.Filename = []byte("/usr/bin/sh")
	exec.Args = [][]byte{[]byte("sh"), []byte("-c"), []byte("ps")}
	fork := base
	fork.Kind, fork.ChildPID, fork.ChildNSPID, fork.ChildNS = event.Fork, 4243, 1, inContainer()
	exit := base
	exit.Kind, exit.Signal, exit.CoreDumped, exit.Duration = event.Exit, 11, true, 1500*time.Millisecond
	exitOK := base
	exitOK.Kind, exitOK.ExitCode, exitOK.Duration = event.Exit, 3, 2*time.Millisecond
	clone := base
	clone.Kind, clone.FlagsRaw, clone.ChildPID, clone.ChildNSPID, clone.ChildNS = event.Clone, 0x60000000|0x100|0x4000|0x11, 4244, 1, inContainer()
	unshare := base
	unshare.Kind, unshare.FlagsRaw, unshare.PrevNS, unshare.NS = event.Unshare, 0x40000000, host, inContainer()
	unshare.NS[ns.Pid], unshare.NS[ns.PidForChildren] = host[ns.Pid], host[ns.Pid]
	setns := base
	setns.Kind, setns.Comm, setns.FD, setns.FlagsRaw, setns.TargetNS, setns.TargetType = event.Setns, []byte("nsenter"), 3, 0, 4026532400, 0x40000000
	setns.PrevNS = host
	setns.NS = host
	setns.NS[ns.Net] = 4026532400
	bad := setns
	bad.FD, bad.TargetNS, bad.TargetType, bad.Ret, bad.NS = 9999, 0, 0, -9, host
	lost := event.Event{Kind: event.Lost, Time: at(), Count: 123}
	pending := event.Event{Kind: event.Lost, Time: at(), Count: 1, Reason: event.LostPending}
	untracked := base
	untracked.Kind, untracked.Count, untracked.Reason, untracked.ChildPID = event.Lost, 1, event.LostTracked, 4245
	compat := unshare
	compat.Compat, compat.FlagsRaw, compat.NS = true, 0, host
	failed := base
	failed.Kind, failed.Filename, failed.Ret = event.Exec, []byte("/no/such"), -2
	comm := base
	comm.Kind, comm.Comm, comm.CommNew = event.Comm, []byte("sleep"), []byte("worker\x1b")
	uid := base
	uid.Kind, uid.OldUID, uid.OldEUID, uid.UID, uid.EUID, uid.OldGID, uid.OldEGID = event.UID, 0, 0, 1000, 1000, 0, 0
	sid := base
	sid.Kind, sid.Ret = event.SID, 4242
	ptrace := base
	ptrace.Kind, ptrace.FlagsRaw, ptrace.TargetPID, ptrace.Ret = event.Ptrace, 16, 4250, 0
	withAnc := exec
	withAnc.Ancestors = []event.Ancestor{{PID: 4241, NSPID: 1, PidNS: 4026532397, Comm: []byte("runc:[2:INIT]")},
		{PID: 4000, NSPID: 4000, PidNS: 4026531836, Comm: []byte("containerd-shim")}, {PID: 1, NSPID: 1, PidNS: 4026531836, Comm: []byte("init")}}
	return []*event.Event{&exec, &fork, &exit, &exitOK, &clone, &unshare, &setns, &bad, &lost, &pending, &untracked, &compat,
		&failed, &comm, &uid, &sid, &ptrace, &withAnc}
}

// humanLine is the human view's line for e, without a newline.
func humanLine(e *event.Event, allNS bool) []byte {
	return appendLine(nil, e, &host, allNS, e.Container != nil)
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestHumanGolden(t *testing.T) {
	var buf bytes.Buffer
	h := NewHuman(&buf, host, false)
	for _, e := range samples() {
		if err := h.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	golden(t, "human.golden", buf.Bytes())
}

func TestHumanAllNS(t *testing.T) {
	e := samples()[0]
	line := string(humanLine(e, true))
	for typ := ns.Type(0); typ < ns.Count; typ++ {
		if !strings.Contains(line, " "+typ.String()+":[") {
			t.Errorf("--all-ns line lacks %s: %s", typ, line)
		}
	}
	line = string(humanLine(e, false))
	if strings.Contains(line, "uts:[") || !strings.Contains(line, "net:[4026532400]") {
		t.Errorf("default line should show only namespaces unlike the host's: %s", line)
	}
}

func TestJSONGolden(t *testing.T) {
	var buf bytes.Buffer
	j := NewJSON(&buf)
	for _, e := range samples() {
		if err := j.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	for i, line := range bytes.Split(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte("\n")) {
		if !json.Valid(line) {
			t.Errorf("line %d is not JSON: %s", i, line)
		}
	}
	golden(t, "json.golden", buf.Bytes())
}

func TestJSONSchema(t *testing.T) {
	var m map[string]any
	if err := json.Unmarshal(AppendJSON(nil, samples()[0]), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"event", "time", "pid", "tid", "ppid", "nspid", "uid", "gid", "comm", "filename", "args", "args_truncated", "ns", "cgroup", "cgroup_id"} {
		if _, ok := m[k]; !ok {
			t.Errorf("exec JSON lacks %q", k)
		}
	}
	set := m["ns"].(map[string]any)
	if set["net"].(float64) != 4026532400 || len(set) != int(ns.Count) {
		t.Errorf("ns object %v", set)
	}
	if m["nspid"].(float64) != 1 {
		t.Errorf("nspid %v", m["nspid"])
	}
	if _, ok := m["cgroup_v1"]; ok {
		t.Error("a cgroup v2 id said to be of a v1 hierarchy")
	}
	e := *samples()[0]
	e.CgroupID, e.CgroupV1, e.Cgroup = 53, "pids", "/docker/abc"
	if err := json.Unmarshal(AppendJSON(nil, &e), &m); err != nil || m["cgroup_v1"] != "pids" || m["cgroup_id"] != 53.0 || m["cgroup"] != "/docker/abc" {
		t.Errorf("a cgroup of the v1 pids hierarchy: %v %v", m, err)
	}
}

// hostile is what a process can put in its name and arguments.
var hostile = [][]byte{
	[]byte("evil\x1b[2J\x1b]0;pwned\x07"),
	[]byte("two\nlines\r\tand\\slash"),
	{'b', 'a', 'd', 0xff, 0xfe, 'u', 't', 'f'},
	[]byte("bidi\u202egnp.exe"),
	[]byte("quote\"s and \u2028"),
	[]byte("del\x7f c1\u0085"),
	[]byte("日本語 ok"),
}

func hostileEvent() *event.Event {
	e := samples()[0]
	e.Comm = hostile[0]
	e.Filename = hostile[2]
	e.Args = hostile
	return e
}

func TestHumanEscapesHostileText(t *testing.T) {
	line := humanLine(hostileEvent(), false)
	for _, c := range line {
		if c < 0x20 || c == 0x7f {
			t.Fatalf("control byte %#x reached the terminal: %q", c, line)
		}
	}
	if !bytes.Contains(line, []byte("日本語 ok")) {
		t.Errorf("printable UTF-8 should pass as is: %s", line)
	}
	for _, want := range []string{`evil\x1b[2J\x1b]0;pwned\x07`, `two\nlines\r\tand\\slash`, `bad\xff\xfeutf`, `bidi\u{202e}gnp.exe`, `del\x7f c1\u{0085}`, `\u{2028}`} {
		if !bytes.Contains(line, []byte(want)) {
			t.Errorf("line lacks %s: %s", want, line)
		}
	}
}

func TestJSONHostileTextStaysValidAndFaithful(t *testing.T) {
	b := AppendJSON(nil, hostileEvent())
	if !json.Valid(b) {
		t.Fatalf("invalid JSON: %s", b)
	}
	if bytes.ContainsAny(b, "\n\r\x1b\x07") {
		t.Errorf("raw control characters in JSON: %q", b)
	}
	var m struct {
		Comm        string   `json:"comm"`
		Filename    string   `json:"filename"`
		FilenameB64 string   `json:"filename_b64"`
		Args        []string `json:"args"`
		ArgsB64     []string `json:"args_b64"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.Comm != string(hostile[0]) {
		t.Errorf("comm %q", m.Comm)
	}
	if m.Filename != "bad\ufffd\ufffdutf" {
		t.Errorf("filename %q", m.Filename)
	}
	raw, err := base64.StdEncoding.DecodeString(m.FilenameB64)
	if err != nil || !bytes.Equal(raw, hostile[2]) {
		t.Errorf("filename_b64 does not restore the bytes: %q %v", raw, err)
	}
	if len(m.ArgsB64) != len(hostile) {
		t.Fatalf("args_b64 has %d entries", len(m.ArgsB64))
	}
	for i, a := range m.ArgsB64 {
		raw, _ := base64.StdEncoding.DecodeString(a)
		if !bytes.Equal(raw, hostile[i]) {
			t.Errorf("args_b64[%d] = %q, want %q", i, raw, hostile[i])
		}
		if i != 2 && m.Args[i] != string(hostile[i]) {
			t.Errorf("args[%d] = %q, want %q", i, m.Args[i], hostile[i])
		}
	}
}

func FuzzJSONAlwaysValid(f *testing.F) {
	for _, h := range hostile {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		e := samples()[0]
		e.Comm, e.Filename, e.Args = s, s, [][]byte{s, s}
		if b := AppendJSON(nil, e); !json.Valid(b) {
			t.Fatalf("invalid JSON for %q: %s", s, b)
		}
		for _, c := range humanLine(e, true) {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("control byte in human line for %q", s)
			}
		}
	})
}

func BenchmarkJSON(b *testing.B) {
	e := samples()[0]
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendJSON(buf[:0], e)
	}
}

func BenchmarkHuman(b *testing.B) {
	e := samples()[0]
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendLine(buf[:0], e, &host, false, false)
	}
}

// Both writers allocate nothing per event, whatever its kind.
func TestWritersAllocateNothing(t *testing.T) {
	h := NewHuman(io.Discard, host, false)
	j := NewJSON(io.Discard)
	for _, e := range samples() {
		e.Container = &event.Container{ID: "abc", Name: "web", Runtime: "runc"}
		_ = h.Write(e)
		_ = j.Write(e)
		if n := testing.AllocsPerRun(100, func() { _ = h.Write(e) }); n != 0 {
			t.Errorf("human view: %v allocations for a %s event", n, e.Kind)
		}
		if n := testing.AllocsPerRun(100, func() { _ = j.Write(e) }); n != 0 {
			t.Errorf("JSON view: %v allocations for a %s event", n, e.Kind)
		}
	}
}

// A pod's container and the pod's sandbox: the pod's keys in JSON, with
// sandbox:true and no container name for the sandbox; POD/CONTAINER and
// POD/(sandbox) in the human view.
func TestPodContainers(t *testing.T) {
	pod := event.Pod{Name: "web", Namespace: "shop", UID: "0a1b2c3d-4e5f-6789-abcd-ef0123456789"}
	app, sandbox := pod, pod
	app.Container, sandbox.Sandbox = "app", true
	for _, c := range []struct {
		c           event.Container
		json, human string
	}{
		{event.Container{ID: "c1", Runtime: "containerd", Image: "busybox", Pod: &app},
			`"container":{"id":"c1","runtime":"containerd","image":"busybox","pod":{"name":"web","namespace":"shop","uid":"0a1b2c3d-4e5f-6789-abcd-ef0123456789","container":"app"}}`, " web/app "},
		{event.Container{ID: "s1", Runtime: "containerd", Pod: &sandbox},
			`"container":{"id":"s1","runtime":"containerd","pod":{"name":"web","namespace":"shop","uid":"0a1b2c3d-4e5f-6789-abcd-ef0123456789","sandbox":true}}`, " web/(sandbox) "},
	} {
		e := *samples()[0]
		e.Container = &c.c
		if j := AppendJSON(nil, &e); !json.Valid(j) || !bytes.Contains(j, []byte(c.json)) {
			t.Errorf("JSON %s, want %s", j, c.json)
		}
		if h := humanLine(&e, false); !bytes.Contains(h, []byte(c.human)) {
			t.Errorf("human %s, want %q", h, c.human)
		}
	}
}
