// SPDX-License-Identifier: Apache-2.0

package tracer

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/procfs"
	"github.com/nstrace/nstrace/internal/procfs/procfstest"
)

func TestOwnersFakeProc(t *testing.T) {
	// The tracer's labels come from the same index as the listing: a bind
	// mount first, else the lowest pid in the namespace.
	root := t.TempDir()
	procfstest.Process(t, root, "20", "p20", map[string]string{"net": "net:[4026532500]", "pid_for_children": "pid:[4026532600]"})
	procfstest.Process(t, root, "21", "p21", map[string]string{"net": "net:[4026532500]", "pid": "pid:[4026532600]"})
	procfstest.Process(t, root, "22", "p22", map[string]string{"net": "net:[4026532700]"})
	procfstest.Mountinfo(t, root, "181 86 0:4 net:[4026532700] /run/netns/blue rw shared:2 - nsfs nsfs rw\n")
	o := newOwners(root, ns.Set{}, container.NewRegistry(container.Roots{}, false), procfs.Hierarchies{})
	index := o.scan()
	for _, c := range []struct {
		t    ns.Type
		ino  uint64
		want string
	}{
		{ns.Net, 4026532500, "pid 20 p20"},
		{ns.Pid, 4026532600, "pid 21 p21"}, // 20 only sends its children there
		{ns.Net, 4026532700, "netns blue"},
		{ns.Net, 4026532999, ""},
	} {
		if got := index[ownerKey{c.t, c.ino}].label; got != c.want {
			t.Errorf("%s:[%d]: %q, want %q", c.t, c.ino, got, c.want)
		}
	}

	// The background scan, then a label checked against the live link.
	waitFor(t, func() bool { return o.of(ns.Net, 4026532500) == "pid 20 p20" })
	// The namespace is gone and its inode reused elsewhere: no label.
	link := filepath.Join(root, "20", "ns", "net")
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("net:[4026532501]", link); err != nil {
		t.Fatal(err)
	}
	if got := o.of(ns.Net, 4026532500); got != "" {
		t.Errorf("a label for a namespace its owner left: %q", got)
	}
	if got := o.of(ns.Net, 1); got != "" {
		t.Errorf("an unknown inode got %q", got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}
