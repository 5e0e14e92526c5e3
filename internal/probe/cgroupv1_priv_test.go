// SPDX-License-Identifier: Apache-2.0

package probe_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

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
	all := testutil.CollectWith(t, probe.Options{Kinds: event.KindSet(0).Add(event.Exec), CgroupV1: h.Controller})
	filtered := testutil.CollectWith(t, probe.Options{Kinds: event.KindSet(0).Add(event.Exec), CgroupV1: h.Controller,
		Filter: probe.Filter{CgroupsV1: []uint64{inode(t, filepath.Join(h.V1, parent))}}})

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
