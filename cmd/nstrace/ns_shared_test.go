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
	name, id string
	pids     []uint32
	ns       ns.Set
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
	app.find(t, 2)
	shared := []ns.Type{ns.IPC, ns.Net}
	own := []ns.Type{ns.Mnt, ns.Pid, ns.UTS}
	for _, typ := range shared {
		if pause.ns[typ] != app.ns[typ] {
			t.Fatalf("%s: pause in %d, app in %d", typ, pause.ns[typ], app.ns[typ])
		}
	}
	for _, typ := range own {
		if pause.ns[typ] == app.ns[typ] {
			t.Fatalf("%s: both containers in %d", typ, pause.ns[typ])
		}
	}
	// holders says who should hold each namespace of the test's.
	type want struct {
		typ     ns.Type
		ino     uint64
		holders []*sharer
	}
	var wants []want
	for _, typ := range shared {
		wants = append(wants, want{typ, pause.ns[typ], []*sharer{pause, app}})
	}
	for _, typ := range own {
		for _, c := range []*sharer{pause, app} {
			wants = append(wants, want{typ, c.ns[typ], []*sharer{c}})
		}
	}
	names := func(cs []*sharer) string {
		var s []string
		for _, c := range cs {
			s = append(s, c.name)
		}
		return strings.Join(s, ",")
	}
	// The pids a namespace holds, by its container, as /proc says.
	pidsIn := func(w want, c *sharer) []uint32 {
		var in []uint32
		for _, pid := range c.pids {
			if s, err := procfs.ReadPIDNS(procfs.Root, pid); err == nil && s[w.typ] == w.ino {
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
	for _, w := range wants {
		label := fmt.Sprintf("%s:[%d]", w.typ, w.ino)
		ino := strconv.FormatUint(w.ino, 10)
		if l := lineOf(table, ino); len(fieldsOf(l)) < 9 || fieldsOf(l)[8] != names(w.holders) {
			t.Errorf("table, %s: %q, want CONTAINER %s", label, l, names(w.holders))
		}
		if l := lineOf(tree, ino); !strings.HasSuffix(l, "  "+names(w.holders)) {
			t.Errorf("tree, %s: %q, want CONTAINER %s", label, l, names(w.holders))
		}
		// PIDS, the last column: "NAME: PIDS" for each container.
		l := lineOf(members, ino)
		groups := map[string][]uint32{}
		if f := fieldsOf(l); len(f) > 5 {
			for _, g := range strings.Split(strings.Join(f[5:], " "), "; ") {
				name, pids, _ := strings.Cut(g, ": ")
				groups[name] = expand(t, pids)
			}
		}
		for _, c := range w.holders {
			if fmt.Sprint(groups[c.name]) != fmt.Sprint(pidsIn(w, c)) {
				t.Errorf("members, %s: %q, want %s's pids %v", label, l, c.name, pidsIn(w, c))
			}
		}
		if len(groups) != len(w.holders) {
			t.Errorf("members, %s: %q, want only %s", label, l, names(w.holders))
		}
		for doc, rs := range map[string][]map[string]any{"--json": objs, "--members --json": memberObjs} {
			r := row(rs, w.typ.String(), w.ino)
			if r == nil {
				t.Errorf("%s: no %s", doc, label)
				continue
			}
			cs, _ := r["containers"].([]any)
			if len(cs) != len(w.holders) {
				t.Errorf("%s, %s: containers %v, want %s", doc, label, r["containers"], names(w.holders))
				continue
			}
			for i, c := range w.holders {
				got, _ := cs[i].(map[string]any)
				if got["id"] != c.id || got["name"] != c.name || fmt.Sprint(got["pids"]) != fmt.Sprint(floats(pidsIn(w, c))) {
					t.Errorf("%s, %s: container %d is %v, want %s with pids %v", doc, label, i, got, c.name, pidsIn(w, c))
				}
			}
		}
		if r := row(memberObjs, w.typ.String(), w.ino); r != nil {
			var all []uint32
			for _, c := range w.holders {
				all = append(all, pidsIn(w, c)...)
			}
			slices.Sort(all)
			if fmt.Sprint(r["pids"]) != fmt.Sprint(floats(all)) {
				t.Errorf("--members --json, %s: pids %v, want %v", label, r["pids"], all)
			}
		}
	}

	var dot bytes.Buffer
	if code := mainExit([]string{"ns", "--dot"}, &dot, &bytes.Buffer{}); code != 0 {
		t.Fatalf("nstrace ns --dot: exit %d", code)
	}
	graph := dot.String()
	for _, w := range wants {
		node := fmt.Sprintf(`"ns:%d"`, w.ino)
		for _, c := range []*sharer{pause, app} {
			edge := fmt.Sprintf(`"c:%s" -> %s`, c.id, node)
			if holds := slices.Contains(w.holders, c); holds != strings.Contains(graph, edge) {
				t.Errorf("--dot: edge %s drawn %v, want %v", edge, !holds, holds)
			}
		}
		shared := strings.Contains(graph, node+fmt.Sprintf(` [label="%s:[%d]\nshared by 2"`, w.typ, w.ino))
		if shared != (len(w.holders) == 2) {
			t.Errorf("--dot: %s:[%d] shown shared %v", w.typ, w.ino, shared)
		}
	}
	for _, c := range []*sharer{pause, app} {
		if !strings.Contains(graph, fmt.Sprintf(`"c:%s" [label="%s\ndocker %s"`, c.id, c.name, image)) {
			t.Errorf("--dot: no node for %s:\n%s", c.name, graph)
		}
	}
	cmd := exec.Command("dot", "-Tsvg")
	cmd.Stdin = strings.NewReader(graph)
	var svg, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &svg, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 || !strings.Contains(svg.String(), "c:"+pause.id) {
		t.Errorf("dot -Tsvg: %v: %s", err, stderr.String())
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
