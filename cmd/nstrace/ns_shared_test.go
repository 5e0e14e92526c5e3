// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/procfs"
	"github.com/nstrace/nstrace/internal/testutil"
)

// sharer is a container of the test and what /proc says of it.
type sharer struct {
	id   string
	name string // as CONTAINER names it alone
	// member is how the members listing names it beside its pod's other
	// containers; name where it is no pod's.
	member string
	pids   []uint32
	ns     ns.Set
}

// holding is a namespace of the test's and who should hold it.
type holding struct {
	typ     ns.Type
	ino     uint64
	holders []*sharer // in the order of their lowest pid in it
	cell    string    // CONTAINER
	pod     bool      // the holders are one pod's
}

// holdings lists cs's namespaces: those of types shared, which all cs
// share, named cell, and those of types own, each one container's.
func holdings(t *testing.T, cs []*sharer, shared, own []ns.Type, cell string, pod bool) []holding {
	t.Helper()
	for _, typ := range shared {
		for _, c := range cs[1:] {
			if c.ns[typ] != cs[0].ns[typ] {
				t.Fatalf("%s: %s in %d, %s in %d", typ, cs[0].name, cs[0].ns[typ], c.name, c.ns[typ])
			}
		}
	}
	for _, typ := range own {
		for _, c := range cs[1:] {
			if c.ns[typ] == cs[0].ns[typ] {
				t.Fatalf("%s: %s and %s both in %d", typ, cs[0].name, c.name, c.ns[typ])
			}
		}
	}
	var hs []holding
	for _, typ := range shared {
		holders := slices.Clone(cs)
		slices.SortFunc(holders, func(a, b *sharer) int { return int(a.pids[0]) - int(b.pids[0]) })
		hs = append(hs, holding{typ, cs[0].ns[typ], holders, cell, pod})
	}
	for _, typ := range own {
		for _, c := range cs {
			hs = append(hs, holding{typ, c.ns[typ], []*sharer{c}, c.name, false})
		}
	}
	return hs
}

// The pod Docker users make by hand: app joins pause's net and ipc
// namespaces. The feed names each container's init; the listing, its
// JSON, the tree, the members listing and the picture name both
// containers for the shared namespaces and only the right one for the
// others, with the pids /proc gives.
func TestPrivilegedNSSharedByContainers(t *testing.T) {
	testutil.RequirePrivileged(t)
	testutil.NeedTools(t, "dot")
	e := engineFor(t, "docker")
	image := e.setup(t)
	mark := strconv.Itoa(rand.IntN(1_000_000))
	pause, app := &sharer{name: "nstrace-pause-" + mark}, &sharer{name: "nstrace-app-" + mark}
	pause.member, app.member = pause.name, app.name
	t.Cleanup(func() { e.remove(app.name); e.remove(pause.name) })
	f := startFeed(t, "--json", "-e", "exec")
	pause.id = cli(t, "dockerd", "docker", "run", "-d", "--network", "none", "--ipc", "shareable", "--name", pause.name,
		image, "sh", "-c", "sleep 3600", "pause"+mark)
	app.id = cli(t, "dockerd", "docker", "run", "-d", "--network", "container:"+pause.name, "--ipc", "container:"+pause.name,
		"--name", app.name, image, "sh", "-c", "sleep 3600 & sleep 3601", "app"+mark)
	for _, c := range []*sharer{pause, app} {
		l := f.next(t, execOf("sh -c "+map[*sharer]string{pause: "sleep 3600 pause", app: "sleep 3600 & sleep 3601 app"}[c]+mark))
		if got := containerOf(l); got == nil || got["id"] != c.id || got["name"] != c.name {
			t.Errorf("%s's init attributed to %v", c.name, got)
		}
	}
	stopFeed(t, f, nil)
	pause.find(t, 1)
	// busybox sh runs its last command in its own stead: sh becomes the
	// second sleep.
	app.find(t, 2)
	cs := []*sharer{pause, app}
	graph := checkShared(t, cs, holdings(t, cs, []ns.Type{ns.IPC, ns.Net}, []ns.Type{ns.Mnt, ns.Pid, ns.UTS}, pause.name+","+app.name, false))
	checkNsentered(t, pause, pause.name+","+app.name)
	for _, c := range cs {
		if !strings.Contains(graph, fmt.Sprintf(`"c:%s" [label="%s\ndocker %s"`, c.id, c.name, image)) {
			t.Errorf("--dot: no node for %s:\n%s", c.name, graph)
		}
	}
}

// A Kubernetes pod through containerd's CRI: its sandbox, app and
// sidecar share net, ipc and uts, each has its own pid and mnt
// namespaces. The shared ones name the pod once; the picture draws the
// three inside the pod's cluster.
func TestPrivilegedNSSharedByPod(t *testing.T) {
	testutil.RequirePrivileged(t)
	testutil.NeedTools(t, "dot")
	c := testutil.StartCRI(t)
	cfg := testutil.NewPod("web-"+strconv.Itoa(rand.IntN(1_000_000)), "nstrace-test")
	pod := cfg.Metadata.Namespace + "/" + cfg.Metadata.Name
	p := c.RunPod(t, cfg)
	app := &sharer{id: p.Start(t, testutil.NewContainer("app", "sh", "-c", "exec sleep 3600")), member: "app"}
	sidecar := &sharer{id: p.Start(t, testutil.NewContainer("sidecar", "sleep", "3600")), member: "sidecar"}
	app.name, sidecar.name = cfg.Metadata.Name+"/app", cfg.Metadata.Name+"/sidecar"
	sandbox := &sharer{id: p.ID, name: cfg.Metadata.Name + "/(sandbox)", member: "(sandbox)"}
	cs := []*sharer{sandbox, app, sidecar}
	for _, s := range cs {
		s.find(t, 1)
	}
	if pid := c.InspectPod(t, p.ID).Info.PID; uint32(pid) != sandbox.pids[0] {
		t.Fatalf("the sandbox's process is %d, its cgroup has %v", pid, sandbox.pids)
	}
	graph := checkShared(t, cs, holdings(t, cs, []ns.Type{ns.IPC, ns.Net, ns.UTS}, []ns.Type{ns.Mnt, ns.Pid}, "pod "+pod, true))
	checkNsentered(t, sandbox, "pod "+pod)
	start := strings.Index(graph, fmt.Sprintf("label=\"pod %s\";", pod))
	end := strings.Index(graph[max(start, 0):], "\t}\n")
	if start < 0 || end < 0 {
		t.Fatalf("--dot: no cluster for pod %s:\n%s", pod, graph)
	}
	for _, s := range cs {
		if !strings.Contains(graph[start:start+end], fmt.Sprintf(`"c:%s" [label="%s\ncontainerd`, s.id, s.member)) {
			t.Errorf("--dot: %s is not in the pod's cluster:\n%s", s.member, graph)
		}
	}
}

// checkShared checks the listing, its JSON, the tree, the members
// listing and the picture for each holding, against the pids /proc
// gives, and returns the picture.
func checkShared(t *testing.T, cs []*sharer, hs []holding) string {
	t.Helper()
	// The pids a namespace holds, by its container, as /proc says.
	pidsIn := func(h holding, c *sharer) []uint32 {
		var in []uint32
		for _, pid := range c.pids {
			if s, err := procfs.ReadPIDNS(procfs.Root, pid); err == nil && s[h.typ] == h.ino {
				in = append(in, pid)
			}
		}
		return in
	}
	table := lines(t, "ns")
	tree := lines(t, "ns", "--tree")
	members := lines(t, "ns", "--members")
	objs := nsJSON(t)
	memberObjs := nsJSON(t, "--members")
	var dot bytes.Buffer
	if code := mainExit([]string{"ns", "--dot"}, &dot, &bytes.Buffer{}); code != 0 {
		t.Fatalf("nstrace ns --dot: exit %d", code)
	}
	graph := dot.String()
	for _, h := range hs {
		label := fmt.Sprintf("%s:[%d]", h.typ, h.ino)
		ino := strconv.FormatUint(h.ino, 10)
		if l := lineOf(table, ino); len(fieldsOf(l)) < 9 || strings.Join(fieldsOf(l)[8:len(fieldsOf(l))-2], " ") != h.cell {
			t.Errorf("table, %s: %q, want CONTAINER %s", label, l, h.cell)
		}
		if l := lineOf(tree, ino); !strings.HasSuffix(l, "  "+h.cell) {
			t.Errorf("tree, %s: %q, want CONTAINER %s", label, l, h.cell)
		}
		// PIDS, the last column: "NAME: PIDS" for each container.
		l := lineOf(members, ino)
		if !strings.Contains(l, "  "+h.cell+"  ") {
			t.Errorf("members, %s: %q, want CONTAINERS %s", label, l, h.cell)
		}
		groups := map[string][]uint32{}
		if _, pids, ok := strings.Cut(l, h.cell+"  "); ok {
			for _, g := range strings.Split(strings.TrimSpace(pids), "; ") {
				name, pids, _ := strings.Cut(g, ": ")
				groups[name] = expand(t, pids)
			}
		}
		for _, c := range h.holders {
			name := c.name
			if h.pod {
				name = c.member
			}
			if fmt.Sprint(groups[name]) != fmt.Sprint(pidsIn(h, c)) {
				t.Errorf("members, %s: %q, want %s's pids %v", label, l, name, pidsIn(h, c))
			}
		}
		if len(groups) != len(h.holders) {
			t.Errorf("members, %s: %q, want %d containers", label, l, len(h.holders))
		}
		for doc, rs := range map[string][]map[string]any{"--json": objs, "--members --json": memberObjs} {
			r := row(rs, h.typ.String(), h.ino)
			if r == nil {
				t.Errorf("%s: no %s", doc, label)
				continue
			}
			got, _ := r["containers"].([]any)
			if len(got) != len(h.holders) {
				t.Errorf("%s, %s: containers %v, want %d", doc, label, r["containers"], len(h.holders))
				continue
			}
			for i, c := range h.holders {
				g, _ := got[i].(map[string]any)
				if g["id"] != c.id || fmt.Sprint(g["pids"]) != fmt.Sprint(floats(pidsIn(h, c))) {
					t.Errorf("%s, %s: container %d is %v, want %s with pids %v", doc, label, i, g, c.id, pidsIn(h, c))
				}
			}
		}
		if r := row(memberObjs, h.typ.String(), h.ino); r != nil {
			var all []uint32
			for _, c := range h.holders {
				all = append(all, pidsIn(h, c)...)
			}
			slices.Sort(all)
			if fmt.Sprint(r["pids"]) != fmt.Sprint(floats(all)) {
				t.Errorf("--members --json, %s: pids %v, want %v", label, r["pids"], all)
			}
		}
		node := fmt.Sprintf(`"ns:%d"`, h.ino)
		for _, c := range cs {
			edge := fmt.Sprintf(`"c:%s" -> %s`, c.id, node)
			if holds := slices.Contains(h.holders, c); holds != strings.Contains(graph, edge) {
				t.Errorf("--dot: edge %s drawn %v, want %v", edge, !holds, holds)
			}
		}
		shared := strings.Contains(graph, node+fmt.Sprintf(` [label="%s\nshared by %d"`, label, len(cs)))
		if shared != (len(h.holders) > 1) {
			t.Errorf("--dot: %s shown shared %v", label, shared)
		}
	}
	cmd := exec.Command("dot", "-Tsvg")
	cmd.Stdin = strings.NewReader(graph)
	var svg, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &svg, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 || !strings.Contains(svg.String(), "c:"+cs[0].id) {
		t.Errorf("dot -Tsvg: %v: %s", err, stderr.String())
	}
	return graph
}

// checkNsentered starts a host process in c's net namespace, as
// `nsenter -t PID -n` from a host shell does, and checks that the
// listing, the tree and the members listing count it after the names
// in cell, and that the members listing gives its pid first, as of no
// known container.
func checkNsentered(t *testing.T, c *sharer, cell string) {
	t.Helper()
	testutil.NeedTools(t, "nsenter")
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(int(c.pids[0])), "-n", "sleep", "3600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := uint32(cmd.Process.Pid)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		// nsenter enters the namespace, then becomes sleep.
		s, err := procfs.ReadPIDNS(procfs.Root, pid)
		if p, ok := procfs.ReadProc(procfs.Root, pid); err == nil && ok && s[ns.Net] == c.ns[ns.Net] && p.Comm == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nsenter into net:[%d]: pid %d is not there", c.ns[ns.Net], pid)
		}
	}
	ino, want := strconv.FormatUint(c.ns[ns.Net], 10), cell+",+1"
	if l := lineOf(lines(t, "ns"), ino); len(fieldsOf(l)) < 9 || strings.Join(fieldsOf(l)[8:len(fieldsOf(l))-2], " ") != want {
		t.Errorf("table, net:[%s] with pid %d nsenter'd: %q, want CONTAINER %s", ino, pid, l, want)
	}
	if l := lineOf(lines(t, "ns", "--tree"), ino); !strings.HasSuffix(l, "  "+want) {
		t.Errorf("tree, net:[%s] with pid %d nsenter'd: %q, want CONTAINER %s", ino, pid, l, want)
	}
	l := lineOf(lines(t, "ns", "--members"), ino)
	if _, pids, _ := strings.Cut(l, "  "+want+"  "); !strings.HasPrefix(strings.TrimSpace(pids), strconv.Itoa(int(pid))+"; ") {
		t.Errorf("members, net:[%s] with pid %d nsenter'd: %q, want CONTAINERS %s, then pid %d", ino, pid, l, want, pid)
	}
}

// find waits for n processes in c's cgroup and reads their namespaces.
func (c *sharer) find(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c.pids = nil
		for _, p := range procfs.Procs(procfs.Root) {
			if strings.Contains(p.Cgroup, c.id) {
				c.pids = append(c.pids, p.PID)
			}
		}
		if len(c.pids) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has processes %v, want %d", c.name, c.pids, n)
		}
	}
	var err error
	if c.ns, err = procfs.ReadPIDNS(procfs.Root, c.pids[0]); err != nil {
		t.Fatal(err)
	}
}

// lines runs nstrace with args and returns its output's lines.
func lines(t *testing.T, args ...string) []string {
	t.Helper()
	var out, stderr bytes.Buffer
	if code := mainExit(args, &out, &stderr); code != 0 {
		t.Fatalf("nstrace %v: exit %d: %s", args, code, stderr.String())
	}
	return strings.Split(out.String(), "\n")
}

// lineOf is the line whose first field, past a tree's branches, is ino.
func lineOf(ls []string, ino string) string {
	for _, l := range ls {
		if f := fieldsOf(l); len(f) > 0 && f[0] == ino {
			return l
		}
	}
	return ""
}

func fieldsOf(l string) []string {
	return strings.Fields(strings.NewReplacer("├─", " ", "└─", " ", "│", " ").Replace(l))
}

// expand reads the members listing's compact pids: "1-3,7".
func expand(t *testing.T, s string) []uint32 {
	t.Helper()
	var out []uint32
	for _, r := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.ParseUint(lo, 10, 32)
		b, err2 := strconv.ParseUint(hi, 10, 32)
		if err1 != nil || err2 != nil || b < a {
			t.Fatalf("pids %q: bad run %q", s, r)
		}
		for p := a; p <= b; p++ {
			out = append(out, uint32(p))
		}
	}
	return out
}

// floats are pids as encoding/json decodes them.
func floats(pids []uint32) []float64 {
	out := make([]float64, len(pids))
	for i, p := range pids {
		out[i] = float64(p)
	}
	return out
}
