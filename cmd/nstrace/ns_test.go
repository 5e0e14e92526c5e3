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
	PNS      uint64      `json:"pns"`
	ONS      uint64      `json:"ons"`
	Children []lsnsEntry `json:"children"`
}

// lsns runs lsns -J with args and returns its namespaces, flattened.
func lsns(t *testing.T, args ...string) []lsnsEntry {
	t.Helper()
	out, err := exec.Command("lsns", append([]string{"-J"}, args...)...).Output()
	if err != nil {
		t.Fatalf("lsns: %v", err)
	}
	var ls struct {
		Namespaces []lsnsEntry `json:"namespaces"`
	}
	if err := json.Unmarshal(out, &ls); err != nil {
		t.Fatal(err)
	}
	return flattenLsns(ls.Namespaces)
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
	for _, args := range [][]string{{"ns", "bogus"}, {"ns", "1", "2"}, {"ns", "--nope"}, {"ns", "-p", "1", "net:5"},
		{"ns", "-t", "pid_for_children"}, {"ns", "-t", "bogus"}, {"ns", "--tree=up"}, {"ns", "--tree", "--json"}, {"ns", "-t", "net", "-p", "1"},
		{"ns", "--dot", "--json"}, {"ns", "--dot", "--tree"}, {"ns", "--dot", "--members"}, {"ns", "--dot", "-p", "1"}, {"ns", "--dot", "net:5"},
		{"ns", "--members", "--tree"}, {"ns", "--members", "-p", "1"}, {"ns", "--members", "net:5"}} {
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
	testutil.SharedNetnsDir(t)
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
	checked := 0
	listed := lsns(t, "-t", "net")
	for _, n := range listed {
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
		t.Errorf("lsns listed %d of the test's 2 net namespaces (%d, %d): %+v", checked, slNS[ns.Net], initNS[ns.Net], listed)
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

// Nested user and pid namespaces, twice deep: PNS and ONS as lsns reads
// them, and the owner tree drawing each inside the one before.
func TestPrivilegedNSRelations(t *testing.T) {
	testutil.RequirePrivileged(t)
	m := fmt.Sprintf("%d.%d", 1000+rand.IntN(1000), rand.IntN(1000000))
	cmd := exec.Command("unshare", "-U", "-r", "-p", "-f", "--kill-child",
		"sh", "-c", "unshare -U -r -p -f --kill-child sleep "+m)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sleeper := waitForArgs(t, "sleep", m)
	inner, err := procfs.ReadPIDNS(procfs.Root, sleeper)
	if err != nil {
		t.Fatal(err)
	}
	// The test's own namespaces are the host's; the sleeper's parent is
	// the inner unshare, and its parent the shell in the first pair.
	outer, err := procfs.ReadNS(procfs.Root, "self")
	if err != nil {
		t.Fatal(err)
	}
	first, err := procfs.ReadPIDNS(procfs.Root, parentOf(t, parentOf(t, sleeper)))
	if err != nil {
		t.Fatal(err)
	}
	byInode := map[uint64]lsnsEntry{}
	for _, e := range lsns(t, "-o", "NS,TYPE,PNS,ONS") {
		byInode[e.NS] = e
	}
	objs := nsJSON(t)
	want := []struct {
		typ  string
		ino  uint64
		pns  uint64
		ons  uint64
		name string
	}{
		{"user", first[ns.User], outer[ns.User], outer[ns.User], "first user"},
		{"pid", first[ns.Pid], outer[ns.Pid], first[ns.User], "first pid"},
		{"user", inner[ns.User], first[ns.User], first[ns.User], "inner user"},
		{"pid", inner[ns.Pid], first[ns.Pid], inner[ns.User], "inner pid"},
	}
	for _, w := range want {
		r := row(objs, w.typ, w.ino)
		if r == nil {
			t.Fatalf("%s %d not listed", w.name, w.ino)
		}
		l := byInode[w.ino]
		got := [2]uint64{uint64(r["pns"].(float64)), uint64(r["ons"].(float64))}
		if got != [2]uint64{w.pns, w.ons} || got != [2]uint64{l.PNS, l.ONS} {
			t.Errorf("%s: pns, ons %v; want %v; lsns says %d, %d", w.name, got, [2]uint64{w.pns, w.ons}, l.PNS, l.ONS)
		}
	}
	// The tree: depth by the indent before the inode.
	var tree bytes.Buffer
	if code := mainExit([]string{"ns", "--tree"}, &tree, &bytes.Buffer{}); code != 0 {
		t.Fatalf("nstrace ns --tree: exit %d", code)
	}
	depth := map[uint64]int{}
	for _, line := range strings.Split(tree.String(), "\n") {
		f := strings.Fields(strings.NewReplacer("├─", " ", "└─", " ", "│", " ").Replace(line))
		if len(f) == 0 {
			continue
		}
		if ino, err := strconv.ParseUint(f[0], 10, 64); err == nil {
			depth[ino] = len([]rune(line)) - len([]rune(strings.TrimLeft(line, " │├└─")))
		}
	}
	chain := []uint64{outer[ns.User], first[ns.User], inner[ns.User], inner[ns.Pid]}
	for i := 1; i < len(chain); i++ {
		if depth[chain[i]] != depth[chain[i-1]]+2 {
			t.Errorf("tree: %d at indent %d, its owner %d at %d:\n%s", chain[i], depth[chain[i]], chain[i-1], depth[chain[i-1]], tree.String())
		}
	}
	if depth[first[ns.Pid]] != depth[first[ns.User]]+2 {
		t.Errorf("tree: first pid namespace not under its owner:\n%s", tree.String())
	}
}

// waitForArgs finds the process running exactly args.
func waitForArgs(t *testing.T, args ...string) uint32 {
	t.Helper()
	want := strings.Join(args, "\x00") + "\x00"
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, p := range procfs.Procs(procfs.Root) {
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID)); err == nil && string(b) == want {
				return p.PID
			}
		}
	}
	t.Fatalf("no process runs %q", args)
	return 0
}

func parentOf(t *testing.T, pid uint32) uint32 {
	t.Helper()
	p, ok := procfs.ReadProc(procfs.Root, pid)
	if !ok {
		t.Fatalf("process %d is gone", pid)
	}
	return p.PPID
}
