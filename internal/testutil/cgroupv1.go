// SPDX-License-Identifier: Apache-2.0

package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/procfs"
)

// CgroupV1 returns the cgroup hierarchies nstrace would use here, with a
// v1 hierarchy among them: the one mounted, or, where none is, one of
// procfs.CgroupV1Controllers mounted for the test under a directory of its
// own (a controller no v2 cgroup uses can be), unmounted when it ends.
// So the tests of cgroup v1 run on v2 hosts too.
func CgroupV1(t testing.TB) procfs.Hierarchies {
	t.Helper()
	h := procfs.FindHierarchies("/proc/self/mountinfo", procfs.CgroupV1Controllers)
	if h.Controller != "" {
		return h
	}
	var errs []string
	for _, c := range procfs.CgroupV1Controllers {
		dir, err := MountCgroupV1(t, c)
		if err == nil {
			id, ok := procfs.HierarchyID("/proc/self/cgroup", c)
			if !ok {
				t.Fatalf("the %s hierarchy mounted at %s has no id in /proc/self/cgroup", c, dir)
			}
			h.V1, h.Controller, h.ID = dir, c, id
			return h
		}
		errs = append(errs, c+": "+err.Error())
	}
	t.Fatalf("no cgroup v1 hierarchy mounted, and none could be: %v", errs)
	return h
}

// MountCgroupV1 mounts the cgroup v1 hierarchy of controller on a new
// directory named after it (runc names a container's view of a v1
// hierarchy so, and mounts it by that name), until the test ends, and
// returns where.
func MountCgroupV1(t testing.TB, controller string) (string, error) {
	t.Helper()
	base, err := os.MkdirTemp("", "nstrace-cgroup-")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, controller)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("cgroup", dir, "cgroup", 0, controller); err != nil {
		_ = os.Remove(dir)
		_ = os.Remove(base)
		return "", err
	}
	t.Cleanup(func() {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		_ = os.Remove(dir)
		_ = os.Remove(base)
	})
	return dir, nil
}

// CgroupDir makes a cgroup at root/rel (its directory, and those above
// it), removed when the test ends, once its processes are gone: the
// directories in rel, deepest first.
func CgroupDir(t testing.TB, root, rel string) string {
	t.Helper()
	dir := filepath.Join(root, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for p := dir; strings.HasPrefix(p, root+"/"); p = filepath.Dir(p) {
			removeCgroupDir(p)
		}
	})
	return dir
}
