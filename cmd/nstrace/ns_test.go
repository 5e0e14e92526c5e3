// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/nsinfo"
	"github.com/nstrace/nstrace/internal/testutil"
)

// lsnsEntry is a namespace in lsns -J output; some versions nest them.
type lsnsEntry struct {
	NS       uint64      `json:"ns"`
	Type     string      `json:"type"`
	NProcs   int         `json:"nprocs"`
	PID      uint32      `json:"pid"`
	Children []lsnsEntry `json:"children"`
}

func flattenLsns(in []lsnsEntry) []lsnsEntry {
	var out []lsnsEntry
	for _, e := range in {
		out = append(out, e)
		out = append(out, flattenLsns(e.Children)...)
	}
	return out
}

// nsJSON runs `nstrace ns --json ARGS` and returns its objects.
func nsJSON(t *testing.T, args ...string) []map[string]any {
	t.Helper()
	var out, stderr bytes.Buffer
	if code := mainExit(append([]string{"ns", "--json"}, args...), &out, &stderr); code != 0 {
		t.Fatalf("nstrace ns %v: exit %d: %s", args, code, stderr.String())
	}
	var objs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		objs = append(objs, m)
	}
	return objs
}

func row(objs []map[string]any, typ string, ino uint64) map[string]any {
	for _, o := range objs {
		if o["type"] == typ && uint64(o["ns"].(float64)) == ino {
			return o
		}
	}
	return nil
}

func TestNSUsage(t *testing.T) {
	for _, args := range [][]string{{"ns", "bogus"}, {"ns", "1", "2"}, {"ns", "--nope"}, {"ns", "-p", "1", "net:5"}} {
		var stderr bytes.Buffer
		if code := mainExit(args, &bytes.Buffer{}, &stderr); code != 2 || strings.Count(strings.TrimSpace(stderr.String()), "\n") != 1 {
			t.Errorf("%v: exit %d, %q", args, code, stderr.String())
		}
	}
}

// fakeProcess makes /proc/PID under root: namespace links and a status.
func fakeProcess(t *testing.T, root, pid, comm string, links map[string]string) {
	t.Helper()
	dir := filepath.Join(root, pid, "ns")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for n, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	status := fmt.Sprintf("Name:\t%s\nPPid:\t1\nNSpid:\t%s\n", comm, pid)
	if err := os.WriteFile(filepath.Join(root, pid, "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestNSListingFakeProc(t *testing.T) {
	// A fake /proc: two processes sharing a net namespace, one whose
	// links cannot be read. The listing must not stumble on the latter.
	root := t.TempDir()
	fakeProcess(t, root, "1", "init", nil)
	fakeProcess(t, root, "10", "a", map[string]string{"net": "net:[4026532500]", "uts": "uts:[4026531838]"})
	fakeProcess(t, root, "11", "b\x1b[31m", map[string]string{"net": "net:[4026532500]"})
	fakeProcess(t, root, "self", "nstrace", map[string]string{"uts": "uts:[4026531838]"})
	var out, stderr bytes.Buffer
	if code := nsMain(nil, &out, &stderr, root); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	text := out.String()
	for _, want := range []string{"4026532500  net   2       10   a     -          no", "4026531838  uts   1       10   a     -          yes", "unreadable namespaces: 1 (init)"} {
		if !strings.Contains(text, want) {
			t.Errorf("listing lacks %q:\n%s", want, text)
		}
	}
	out.Reset()
	if code := nsMain([]string{"net:4026532500"}, &out, &stderr, root); code != 0 || !strings.Contains(out.String(), `b\x1b[31m`) {
		t.Errorf("processes in net:[4026532500]: %s %s", out.String(), stderr.String())
	}
}

func TestOwnersFakeProc(t *testing.T) {
	// The tracer's labels come from the same index as the listing: a bind
	// mount first, else the lowest pid in the namespace.
	root := t.TempDir()
	fakeProcess(t, root, "20", "p20", map[string]string{"net": "net:[4026532500]", "pid_for_children": "pid:[4026532600]"})
	fakeProcess(t, root, "21", "p21", map[string]string{"net": "net:[4026532500]", "pid": "pid:[4026532600]"})
	fakeProcess(t, root, "22", "p22", map[string]string{"net": "net:[4026532700]"})
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	mounts := "181 86 0:4 net:[4026532700] /run/netns/blue rw shared:2 - nsfs nsfs rw\n"
	if err := os.WriteFile(filepath.Join(root, "self", "mountinfo"), []byte(mounts), 0o644); err != nil {
		t.Fatal(err)
	}
	o := newOwners(root, event.NS{}, container.NewRegistry(root, nil, 0))
	for _, c := range []struct {
		t    event.NSType
		ino  uint64
		want string
	}{
		{event.NSNet, 4026532500, "pid 20 p20"},
		{event.NSPid, 4026532600, "pid 21 p21"}, // 20 only sends its children there
		{event.NSNet, 4026532700, "netns blue"},
		{event.NSNet, 4026532999, ""},
	} {
		if got := o.of(c.t, c.ino); got != c.want {
			t.Errorf("%s:[%d]: %q, want %q", c.t, c.ino, got, c.want)
		}
	}
}

func TestPrivilegedNSListing(t *testing.T) {
	testutil.RequirePrivileged(t)
	// Known namespaces: a process in new net and uts namespaces, a netns
	// kept only by a bind mount, and a runc container.
	m := fmt.Sprintf("%d.%d", 1000+rand.IntN(1000), rand.IntN(1000))
	sl := exec.Command("unshare", "-n", "-u", "sleep", m)
	if err := sl.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sl.Process.Kill(); _ = sl.Wait() }()
	name := fmt.Sprintf("nstrace-ns-%d", rand.IntN(1_000_000))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	id := fmt.Sprintf("nstrace-ns-%d", rand.IntN(1_000_000))
	dir := runcBundle(t, "/bin/sh", "-c", "sleep 3600")
	runc(t, dir, "run", "-d", id)
	defer func() {
		_ = exec.Command("runc", "kill", id, "KILL").Run()
		_ = exec.Command("runc", "delete", "-f", id).Run()
	}()
	var slNS event.NS
	pid := uint32(sl.Process.Pid)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.HasPrefix(string(b), "sleep") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sleep did not start")
		}
	}
	slNS, _ = nsinfo.ReadNS(nsinfo.ProcRoot, strconv.Itoa(int(pid)))
	host, _ := nsinfo.ReadNS(nsinfo.ProcRoot, "self")
	var bind syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+name, &bind); err != nil {
		t.Fatal(err)
	}
	st, _ := os.ReadFile("/run/runc/" + id + "/state.json")
	var state struct {
		InitPID uint32 `json:"init_process_pid"`
	}
	_ = json.Unmarshal(st, &state)
	initNS, _ := nsinfo.ReadNS(nsinfo.ProcRoot, strconv.Itoa(int(state.InitPID)))

	objs := nsJSON(t)
	for _, typ := range []event.NSType{event.NSNet, event.NSUTS} {
		r := row(objs, typ.String(), slNS[typ])
		if r == nil || r["nprocs"] != 1.0 || uint32(r["pid"].(float64)) != pid || r["comm"] != "sleep" || r["host"] != false {
			t.Errorf("%s namespace of sleep: %v", typ, r)
		}
	}
	if r := row(objs, "net", host[event.NSNet]); r == nil || r["host"] != true {
		t.Errorf("host net namespace: %v", r)
	}
	if r := row(objs, "net", bind.Ino); r == nil || r["nprocs"] != 0.0 || fmt.Sprint(r["mounts"]) != "[/run/netns/"+name+"]" {
		t.Errorf("bind-mounted netns: %v", r)
	}
	r := row(objs, "pid", initNS[event.NSPid])
	if c, _ := r["container"].(map[string]any); r == nil || uint32(r["pid"].(float64)) != state.InitPID || c["name"] != id {
		t.Errorf("container's pid namespace: %v", r)
	}
	if _, err := os.Readlink("/proc/1/ns/net"); err != nil {
		found := false
		for _, o := range objs {
			found = found || (o["unreadable"] == true && o["pid"] == 1.0)
		}
		if !found {
			t.Error("PID 1's unreadable namespaces are not reported")
		}
	}

	// Against lsns, for the namespaces this test made.
	out, err := exec.Command("lsns", "-J", "-t", "net").Output()
	if err != nil {
		t.Fatalf("lsns: %v", err)
	}
	var ls struct {
		Namespaces []lsnsEntry `json:"namespaces"`
	}
	if err := json.Unmarshal(out, &ls); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, n := range flattenLsns(ls.Namespaces) {
		if n.NS != slNS[event.NSNet] && n.NS != initNS[event.NSNet] {
			continue
		}
		checked++
		r := row(objs, n.Type, n.NS)
		if r == nil || int(r["nprocs"].(float64)) != n.NProcs || uint32(r["pid"].(float64)) != n.PID {
			t.Errorf("lsns says %+v, nstrace ns %v", n, r)
		}
	}
	if checked != 2 {
		t.Errorf("lsns listed %d of the test's 2 net namespaces (%d, %d):\n%s", checked, slNS[event.NSNet], initNS[event.NSNet], out)
	}

	// One process's namespaces, and one namespace's processes.
	for _, o := range nsJSON(t, "-p", strconv.Itoa(int(pid))) {
		typ, _ := event.ParseNSType(o["type"].(string))
		if uint64(o["ns"].(float64)) != slNS[typ] || o["host"] != (slNS[typ] == host[typ]) {
			t.Errorf("ns -p: %v, /proc says %d (host %d)", o, slNS[typ], host[typ])
		}
	}
	procs := nsJSON(t, fmt.Sprintf("net:%d", slNS[event.NSNet]))
	if len(procs) != 1 || uint32(procs[0]["pid"].(float64)) != pid || procs[0]["comm"] != "sleep" {
		t.Errorf("ns net:INODE: %v", procs)
	}
	inits := nsJSON(t, fmt.Sprintf("pid:%d", initNS[event.NSPid]))
	if len(inits) == 0 || inits[0]["nspid"] != 1.0 {
		t.Errorf("container pid namespace: %v", inits)
	}
}
