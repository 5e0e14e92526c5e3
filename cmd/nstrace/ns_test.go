// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/procfs"
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
	var slNS ns.Set
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
	slNS, _ = procfs.ReadPIDNS(procfs.Root, pid)
	host, _ := procfs.ReadNS(procfs.Root, "self")
	var bind syscall.Stat_t
	if err := syscall.Stat("/run/netns/"+name, &bind); err != nil {
		t.Fatal(err)
	}
	st, _ := os.ReadFile("/run/runc/" + id + "/state.json")
	var state struct {
		InitPID uint32 `json:"init_process_pid"`
	}
	_ = json.Unmarshal(st, &state)
	initNS, _ := procfs.ReadPIDNS(procfs.Root, state.InitPID)

	objs := nsJSON(t)
	for _, typ := range []ns.Type{ns.Net, ns.UTS} {
		r := row(objs, typ.String(), slNS[typ])
		if r == nil || r["nprocs"] != 1.0 || uint32(r["pid"].(float64)) != pid || r["comm"] != "sleep" || r["host"] != false {
			t.Errorf("%s namespace of sleep: %v", typ, r)
		}
	}
	if r := row(objs, "net", host[ns.Net]); r == nil || r["host"] != true {
		t.Errorf("host net namespace: %v", r)
	}
	if r := row(objs, "net", bind.Ino); r == nil || r["nprocs"] != 0.0 || fmt.Sprint(r["mounts"]) != "[/run/netns/"+name+"]" {
		t.Errorf("bind-mounted netns: %v", r)
	}
	r := row(objs, "pid", initNS[ns.Pid])
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
		if n.NS != slNS[ns.Net] && n.NS != initNS[ns.Net] {
			continue
		}
		checked++
		r := row(objs, n.Type, n.NS)
		if r == nil || int(r["nprocs"].(float64)) != n.NProcs || uint32(r["pid"].(float64)) != n.PID {
			t.Errorf("lsns says %+v, nstrace ns %v", n, r)
		}
	}
	if checked != 2 {
		t.Errorf("lsns listed %d of the test's 2 net namespaces (%d, %d):\n%s", checked, slNS[ns.Net], initNS[ns.Net], out)
	}

	// One process's namespaces, and one namespace's processes.
	for _, o := range nsJSON(t, "-p", strconv.Itoa(int(pid))) {
		typ, _ := ns.Parse(o["type"].(string))
		if uint64(o["ns"].(float64)) != slNS[typ] || o["host"] != (slNS[typ] == host[typ]) {
			t.Errorf("ns -p: %v, /proc says %d (host %d)", o, slNS[typ], host[typ])
		}
	}
	procs := nsJSON(t, fmt.Sprintf("net:%d", slNS[ns.Net]))
	if len(procs) != 1 || uint32(procs[0]["pid"].(float64)) != pid || procs[0]["comm"] != "sleep" {
		t.Errorf("ns net:INODE: %v", procs)
	}
	inits := nsJSON(t, fmt.Sprintf("pid:%d", initNS[ns.Pid]))
	if len(inits) == 0 || inits[0]["nspid"] != 1.0 {
		t.Errorf("container pid namespace: %v", inits)
	}
}
