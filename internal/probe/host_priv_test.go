// SPDX-License-Identifier: Apache-2.0

package probe

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// The programs take a task that points at the initial nsproxy, user
// namespace or css_set to be in the host's namespaces (or root cgroup)
// without reading them: the kernel must have named all three, and the
// root cgroup's id must be the cgroup v2 root directory's inode.
func TestPrivilegedHostObjectsKnown(t *testing.T) {
	if os.Getenv("NSTRACE_PRIVILEGED_TESTS") != "1" {
		t.Skip("privileged test: run as root with NSTRACE_PRIVILEGED_TESTS=1 (make test does)")
	}
	h, err := hostKnown()
	if err != nil {
		t.Fatal(err)
	}
	if h.Found == 0 || h.Nsproxy == 0 || h.UserNs == 0 || h.CssSet == 0 {
		t.Fatalf("host objects: %+v", h)
	}
	for i, v := range h.Ns {
		if v == 0 {
			t.Errorf("host namespace %d unknown", i)
		}
	}
	for _, dir := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var fs unix.Statfs_t
		var st unix.Stat_t
		if unix.Statfs(dir, &fs) != nil || fs.Type != unix.CGROUP2_SUPER_MAGIC || unix.Stat(dir, &st) != nil {
			continue
		}
		if h.CgroupId != st.Ino {
			t.Errorf("root cgroup id %d, %s has inode %d", h.CgroupId, dir, st.Ino)
		}
		return
	}
	t.Log("no cgroup v2 mount to compare the root cgroup's id with")
}
