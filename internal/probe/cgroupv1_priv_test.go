// SPDX-License-Identifier: Apache-2.0

package probe_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/probe"
	"github.com/nstrace/nstrace/internal/procfs"
	"github.com/nstrace/nstrace/internal/testutil"
)

// A process in the cgroup v2 root is identified by its cgroup in the v1
// hierarchy asked for, with that cgroup's id and names, and the kernel's
// cgroup filter follows that hierarchy; a process in a v2 cgroup of its
// own is identified by that one, as without v1.
func TestPrivilegedCgroupV1(t *testing.T) {
	testutil.RequirePrivileged(t)
	h := testutil.CgroupV1(t)
	m := marker()
	parent := "nstrace-test-" + m
	v1dir := testutil.CgroupDir(t, h.V1, filepath.Join(parent, "payload"))
	exec := event.KindSet(0).Add(event.Exec)
	all := testutil.CollectWith(t, probe.Options{Kinds: exec, CgroupV1: h.Controller, CgroupV1Hierarchy: h.ID})
	filtered := testutil.CollectWith(t, probe.Options{Kinds: exec, CgroupV1: h.Controller, CgroupV1Hierarchy: h.ID,
		Filter: probe.Filter{CgroupsV1: []uint64{inode(t, filepath.Join(h.V1, parent))}}})
	// Told to expect another hierarchy of the controller (as after it is
	// mounted again): the v2 root, whatever the v1 cgroup.
	other := testutil.CollectWith(t, probe.Options{Kinds: exec, CgroupV1: h.Controller, CgroupV1Hierarchy: h.ID + 1})

	// Into the v2 root (where it is not already) and the v1 cgroup.
	script := fmt.Sprintf(`echo $$ >%s/cgroup.procs && exec /bin/true v1 %s`, v1dir, m)
	if h.V2 != "" {
		script = fmt.Sprintf(`echo $$ >%s/cgroup.procs && %s`, h.V2, script)
	}
	run(t, "sh", "-c", script)
	run(t, "/bin/true", "host", m)
	ex := all.Wait(t, 1, wait, isExec("/bin/true", "v1", m))[0]
	if ex.CgroupID != inode(t, v1dir) || ex.CgroupV1 != h.Controller || ex.CgroupName != "payload" || ex.CgroupParent != parent {
		t.Errorf("exec in %s: cgroup %d (v1 %q) %q in %q, want %d (v1 %q) payload in %s",
			v1dir, ex.CgroupID, ex.CgroupV1, ex.CgroupName, ex.CgroupParent, inode(t, v1dir), h.Controller, parent)
	}
	// The test's own child, where the test is in the v2 root: its v1
	// cgroup, or, in the v1 root too, the v2 root, as without v1.
	host := all.Wait(t, 1, wait, isExec("/bin/true", "host", m))[0]
	self, ok := procfs.ReadProc(procfs.Root, uint32(os.Getpid()))
	if !ok {
		t.Fatal("reading this process")
	}
	if path, v1 := h.CgroupOf(self); v1 || path == "/" {
		// The v2 hierarchy's root is kernfs node 1, mounted or not.
		want, wantV1 := uint64(1), ""
		if v1 {
			want, wantV1 = inode(t, filepath.Join(h.V1, path)), h.Controller
		}
		if host.CgroupID != want || host.CgroupV1 != wantV1 {
			t.Errorf("exec in v1 %s: cgroup %d (v1 %q), want %d (v1 %q)", path, host.CgroupID, host.CgroupV1, want, wantV1)
		}
	}
	filtered.Wait(t, 1, wait, isExec("/bin/true", "v1", m))
	if e := other.Wait(t, 1, wait, isExec("/bin/true", "v1", m))[0]; e.CgroupID != 1 || e.CgroupV1 != "" {
		t.Errorf("exec in %s, hierarchy %d expected, %d there: cgroup %d (v1 %q), want the v2 root", v1dir, h.ID+1, h.ID, e.CgroupID, e.CgroupV1)
	}

	if h.V2 != "" {
		// In a v2 cgroup of its own, and in the v1 one.
		v2dir := testutil.CgroupDir(t, h.V2, parent)
		run(t, "sh", "-c", fmt.Sprintf(`echo $$ >%s/cgroup.procs && echo $$ >%s/cgroup.procs && exec /bin/true v2 %s`, v2dir, v1dir, m))
		ex := all.Wait(t, 1, wait, isExec("/bin/true", "v2", m))[0]
		if ex.CgroupID != inode(t, v2dir) || ex.CgroupV1 != "" || ex.CgroupName != parent {
			t.Errorf("exec in %s: cgroup %d (v1 %q) %q, want %d, v2", v2dir, ex.CgroupID, ex.CgroupV1, ex.CgroupName, inode(t, v2dir))
		}
	}
	all.Settle()
	filtered.Settle()
	// Neither the host's exec nor the one its v2 cgroup identifies.
	for _, e := range filtered.Events() {
		if e.CgroupV1 != h.Controller || e.CgroupName != "payload" {
			t.Errorf("the v1 cgroup filter let through %s %q in cgroup %d (v1 %q) %q", e.Kind, e.Args, e.CgroupID, e.CgroupV1, e.CgroupName)
		}
	}
}

// A v1 hierarchy unmounted and mounted again is another hierarchy, with
// another id, whose cgroups' ids start again: a probe opened on the first
// takes a process in the second for one in the v2 root, not for one in the
// first's cgroup of the same id. Tried where a controller is bound to no
// v1 hierarchy (a v2 host: the kernel matrix's v2 guests), so the test can
// make and unmake its hierarchy: one whose removed cgroups nothing keeps
// (memory's and blkio's are kept by the pages charged to them, and a
// hierarchy unmounted with a cgroup left stays), where a process can be
// put without settings (cpuset's needs cpus and mems).
func TestPrivilegedCgroupV1Remounted(t *testing.T) {
	testutil.RequirePrivileged(t)
	var dir, controller string
	for _, c := range []string{"pids", "devices", "freezer", "cpu", "cpuacct"} {
		if _, bound := procfs.HierarchyID("/proc/self/cgroup", c); bound {
			continue
		}
		if d, err := testutil.MountCgroupV1(t, c); err == nil {
			dir, controller = d, c
			break
		}
	}
	if controller == "" {
		t.Log("pids, devices, freezer, cpu and cpuacct are all bound to v1 hierarchies here: the kernel side's check of the hierarchy is TestPrivilegedCgroupV1's")
		return
	}
	first, ok := procfs.HierarchyID("/proc/self/cgroup", controller)
	if !ok {
		t.Fatalf("the %s hierarchy mounted at %s has no id", controller, dir)
	}
	// A process in the v2 root (where it is not already) and in cg.
	v2, _ := procfs.Cgroup2Mount("/proc/self/mountinfo")
	m := marker()
	c := testutil.CollectWith(t, probe.Options{Kinds: event.KindSet(0).Add(event.Exec), CgroupV1: controller, CgroupV1Hierarchy: first})
	enter := func(cg string, tag string) (*event.Event, uint64) {
		t.Helper()
		if err := os.Mkdir(cg, 0o755); err != nil {
			t.Fatal(err)
		}
		id := inode(t, cg)
		script := fmt.Sprintf(`echo $$ >%s/cgroup.procs && exec /bin/true %s %s`, cg, tag, m)
		if v2 != "" {
			script = fmt.Sprintf(`echo $$ >%s/cgroup.procs && %s`, v2, script)
		}
		run(t, "sh", "-c", script)
		e := c.Wait(t, 1, wait, isExec("/bin/true", tag, m))[0]
		for deadline := time.Now().Add(wait); os.Remove(cg) != nil; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("removing %s", cg)
			}
		}
		return e, id
	}
	cg := filepath.Join(dir, "nstrace-test-"+m)
	if e, id := enter(cg, "first"); e.CgroupID != id || e.CgroupV1 != controller {
		t.Errorf("exec in %s: cgroup %d (v1 %q), want %d (v1 %s)", cg, e.CgroupID, e.CgroupV1, id, controller)
	}
	// The hierarchy goes once unmounted with no cgroup below its root,
	// the removed one gone too.
	for deadline := time.Now().Add(wait); cgroupsIn(t, first) != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the %s hierarchy %d keeps %d cgroups", controller, first, cgroupsIn(t, first))
		}
	}
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		if _, bound := procfs.HierarchyID("/proc/self/cgroup", controller); !bound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %s hierarchy %d outlives its unmount", controller, first)
		}
	}
	if err := unix.Mount("cgroup", dir, "cgroup", 0, controller); err != nil {
		t.Fatal(err)
	}
	second, _ := procfs.HierarchyID("/proc/self/cgroup", controller)
	e, id := enter(cg, "second")
	if e.CgroupID != 1 || e.CgroupV1 != "" {
		t.Errorf("exec in %s (hierarchy %d, the probe's %d; cgroup id %d): cgroup %d (v1 %q), want the v2 root",
			cg, second, first, id, e.CgroupID, e.CgroupV1)
	}
	t.Logf("%s: hierarchy %d, mounted again as %d; its cgroup's id there %d", controller, first, second, id)
}

// cgroupsIn is how many cgroups the v1 hierarchy of this id has, its
// root and removed ones not yet freed included, as /proc/cgroups says;
// 0 for no such hierarchy.
func cgroupsIn(t *testing.T, hierarchy int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/cgroups")
	if err != nil {
		t.Fatal(err)
	}
	// subsys_name hierarchy num_cgroups enabled
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[1] == strconv.Itoa(hierarchy) {
			n, _ := strconv.Atoi(f[2])
			return n
		}
	}
	return 0
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v: %s", name, args, err, out)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
