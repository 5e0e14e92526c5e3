// SPDX-License-Identifier: Apache-2.0

package procfs_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nstrace/nstrace/internal/ns"
	. "github.com/nstrace/nstrace/internal/procfs"
	"github.com/nstrace/nstrace/internal/procfs/procfstest"
)

func TestReadNS(t *testing.T) {
	root := t.TempDir()
	procfstest.Process(t, root, "42", "sh", map[string]string{
		"net": "net:[4026532397]", "pid": "pid:[4026531836]", "uts": "uts:[4026531838]",
		"pid_for_children": "pid:[4026532500]", "mnt": "garbage",
	})
	got, err := ReadNS(root, "42")
	if err != nil {
		t.Fatal(err)
	}
	want := ns.Set{}
	want[ns.Net], want[ns.Pid], want[ns.UTS], want[ns.PidForChildren] = 4026532397, 4026531836, 4026531838, 4026532500
	if got != want {
		t.Errorf("got %v, want %v (unreadable and malformed links stay 0)", got, want)
	}
	if _, err := ReadNS(root, "43"); err == nil {
		t.Error("a process with no links should report an error")
	}
}

func TestReadNSSelf(t *testing.T) {
	got, err := ReadNS(Root, "self")
	if err != nil {
		t.Fatal(err)
	}
	if got[ns.Net] == 0 || got[ns.Mnt] == 0 {
		t.Errorf("own namespaces unknown: %v", got)
	}
}

func TestReadProcNSpid(t *testing.T) {
	root := t.TempDir()
	procfstest.Status(t, root, "4242", "Name:\tsh\nTgid:\t4242\nNSpid:\t4242\t17\t1\nPPid:\t7\n")
	p, ok := ReadProc(root, 4242)
	if !ok || p.NSPID != 1 || p.PPID != 7 || p.Comm != "sh" || p.Readable {
		t.Errorf("ReadProc = %+v %v; want nspid 1, ppid 7, sh, namespaces unreadable", p, ok)
	}
	if _, ok := ReadProc(root, 4243); ok {
		t.Error("a missing process was read")
	}
}

func TestCgroup2Mount(t *testing.T) {
	dir := t.TempDir()
	mi := filepath.Join(dir, "mountinfo")
	hybrid := `25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 25 0:31 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
`
	if err := os.WriteFile(mi, []byte(hybrid), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, ok := Cgroup2Mount(mi); !ok || got != "/sys/fs/cgroup/unified" {
		t.Errorf("hybrid: %q %v", got, ok)
	}
	unified := "30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n" +
		"31 1 0:27 /sub /mnt/with\\040space rw - cgroup2 cgroup2 rw\n"
	if err := os.WriteFile(mi, []byte(unified), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, ok := Cgroup2Mount(mi); !ok || got != "/sys/fs/cgroup" {
		t.Errorf("unified: %q %v", got, ok)
	}
	if err := os.WriteFile(mi, []byte("31 1 0:27 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := Cgroup2Mount(mi); got != "/mnt/with space" {
		t.Errorf("escaped mount point: %q", got)
	}
	// In a container's cgroup namespace: its own hierarchy shows as "/",
	// the host's, mounted over it, as "/../..".
	inContainer := "40 30 0:26 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n" +
		"41 40 0:26 /../.. /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n" +
		"42 30 0:26 /../x /mnt/other ro - cgroup2 cgroup2 rw\n"
	if err := os.WriteFile(mi, []byte(inContainer), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, ok := Cgroup2Mount(mi); !ok || got != "/sys/fs/cgroup" {
		t.Errorf("in a cgroup namespace: %q %v", got, ok)
	}
	if err := os.WriteFile(mi, []byte("42 30 0:26 /../x /mnt/other ro - cgroup2 cgroup2 rw\n41 40 0:26 /.. /host/cgroup ro - cgroup2 cgroup2 rw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, ok := Cgroup2Mount(mi); !ok || got != "/host/cgroup" {
		t.Errorf("the host's hierarchy elsewhere: %q %v", got, ok)
	}
}

// The v1 hierarchy that identifies a process is the first of the
// controllers asked for that is mounted whole, with its id from the
// cgroup file beside mountinfo; co-mounted controllers count, named
// hierarchies do not, nor one whose id is not there.
func TestFindHierarchies(t *testing.T) {
	dir := t.TempDir()
	mi, cg := filepath.Join(dir, "mountinfo"), filepath.Join(dir, "cgroup")
	prefer := []string{"pids", "memory", "cpu"}
	ids := "8:pids:/\n4:memory:/docker/abc\n3:cpu,cpuacct:/\n1:name=systemd:/\n0::/\n"
	for _, c := range []struct {
		name, text, cgroup string
		want               Hierarchies
	}{
		{"hybrid", "25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n" +
			"26 25 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
			"27 25 0:24 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,nosuid,nodev,noexec,relatime,pids\n" +
			"34 25 0:31 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n", ids,
			Hierarchies{V2: "/sys/fs/cgroup/unified", V1: "/sys/fs/cgroup/pids", Controller: "pids", ID: 8}},
		{"v1 only, cpu with cpuacct", "25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n" +
			"26 25 0:23 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n" +
			"28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n", ids,
			Hierarchies{V1: "/sys/fs/cgroup/cpu,cpuacct", Controller: "cpu", ID: 3}},
		{"v2 only", "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n", "0::/\n",
			Hierarchies{V2: "/sys/fs/cgroup"}},
		// In a cgroup namespace, the host's hierarchy, mounted over the
		// namespace's own, is the one.
		{"in a cgroup namespace", "40 30 0:23 / /sys/fs/cgroup/pids ro - cgroup cgroup rw,pids\n" +
			"41 40 0:23 /.. /sys/fs/cgroup/pids ro - cgroup cgroup rw,pids\n", ids,
			Hierarchies{V1: "/sys/fs/cgroup/pids", Controller: "pids", ID: 8}},
		{"a part of a hierarchy", "40 30 0:23 /docker /mnt/pids ro - cgroup cgroup rw,pids\n" +
			"41 30 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n", ids,
			Hierarchies{V1: "/sys/fs/cgroup/memory", Controller: "memory", ID: 4}},
		{"a named hierarchy only", "26 25 0:23 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n", ids, Hierarchies{}},
		// pids mounted, but bound to no hierarchy now as the cgroup
		// file says: the next one.
		{"an id missing", "26 25 0:23 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n" +
			"27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n", "4:memory:/\n0::/\n",
			Hierarchies{V1: "/sys/fs/cgroup/memory", Controller: "memory", ID: 4}},
	} {
		if err := os.WriteFile(mi, []byte(c.text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cg, []byte(c.cgroup), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := FindHierarchies(mi, prefer); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestHierarchyID(t *testing.T) {
	cg := filepath.Join(t.TempDir(), "cgroup")
	if err := os.WriteFile(cg, []byte("12:pids:/x\n4:cpu,cpuacct:/\n1:name=systemd:/\nx:memory:/\n0::/\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		controller string
		id         int
		ok         bool
	}{{"pids", 12, true}, {"cpuacct", 4, true}, {"memory", 0, false}, {"devices", 0, false}, {"", 0, false}} {
		if id, ok := HierarchyID(cg, c.controller); id != c.id || ok != c.ok {
			t.Errorf("%q: %d %v, want %d %v", c.controller, id, ok, c.id, c.ok)
		}
	}
	if _, ok := HierarchyID(cg+".missing", "pids"); ok {
		t.Error("an id from no file")
	}
}

// A process in the v2 root is identified by its cgroup in the v1
// hierarchy; one in a v2 cgroup of its own, by that.
func TestCgroupOf(t *testing.T) {
	root := t.TempDir()
	h := Hierarchies{V2: "/sys/fs/cgroup/unified", V1: "/sys/fs/cgroup/pids", Controller: "pids"}
	for _, c := range []struct {
		file, path string
		v1         bool
	}{
		{"12:pids:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n", "/docker/abc", true},
		{"12:pids:/docker/abc\n0::/docker/abc\n", "/docker/abc", false},
		{"12:pids:/mybox\n", "/mybox", true},
		{"4:cpu,cpuacct:/x\n0::/\n", "/", false},
	} {
		procfstest.Status(t, root, "7", "Name:\tsh\n")
		if err := os.WriteFile(filepath.Join(root, "7", "cgroup"), []byte(c.file), 0o644); err != nil {
			t.Fatal(err)
		}
		p, _ := ReadProc(root, 7)
		if path, v1 := h.CgroupOf(p); path != c.path || v1 != c.v1 {
			t.Errorf("%q: %q %v, want %q %v", c.file, path, v1, c.path, c.v1)
		}
		if path, v1 := (Hierarchies{V2: h.V2}).CgroupOf(p); v1 || path != p.Cgroup {
			t.Errorf("%q without a v1 hierarchy: %q %v", c.file, path, v1)
		}
	}
}

func TestCgroupPathWithoutHierarchy(t *testing.T) {
	c := NewCgroups(filepath.Join(t.TempDir(), "missing"))
	defer c.Close()
	if p := c.Path(1); p != "" {
		t.Errorf("path %q without a hierarchy", p)
	}
}

func TestMountsAndNSMounts(t *testing.T) {
	mi := filepath.Join(t.TempDir(), "mountinfo")
	text := "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n" +
		"40 30 0:4 net:[4026532617] /run/netns/nstx rw shared:5 - nsfs nsfs rw\n" +
		"41 30 0:4 net:[4026532617] /run/netns/nstx rw shared:5 - nsfs nsfs rw\n" +
		"42 30 0:4 uts:[4026532700] /tmp/a\\040b rw - nsfs nsfs rw\n" +
		"garbage line\n"
	if err := os.WriteFile(mi, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ms, err := Mounts(mi)
	if err != nil || len(ms) != 4 || ms[3].Point != "/tmp/a b" || ms[1].Root != "net:[4026532617]" || ms[1].ID != 40 || ms[1].Parent != 30 {
		t.Fatalf("Mounts = %+v %v", ms, err)
	}
	got := NSMounts(mi)
	want := []NSMount{{ns.Net, 4026532617, "/run/netns/nstx"}, {ns.UTS, 4026532700, "/tmp/a b"}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("NSMounts = %+v, want %+v", got, want)
	}
}
