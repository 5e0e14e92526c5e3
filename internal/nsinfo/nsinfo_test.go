// SPDX-License-Identifier: Apache-2.0

package nsinfo

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nstrace/nstrace/internal/event"
)

// fakeProc builds /proc/PID/ns links and a status file under a temp dir.
func fakeProc(t *testing.T, pid string, links map[string]string, status string) string {
	root := t.TempDir()
	dir := filepath.Join(root, pid, "ns")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if status != "" {
		if err := os.WriteFile(filepath.Join(root, pid, "status"), []byte(status), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestReadNS(t *testing.T) {
	root := fakeProc(t, "42", map[string]string{
		"net": "net:[4026532397]", "pid": "pid:[4026531836]", "uts": "uts:[4026531838]",
		"pid_for_children": "pid:[4026532500]", "mnt": "garbage",
	}, "")
	ns, err := ReadNS(root, "42")
	if err != nil {
		t.Fatal(err)
	}
	want := event.NS{}
	want[event.NSNet], want[event.NSPid], want[event.NSUTS], want[event.NSPidForChildren] = 4026532397, 4026531836, 4026531838, 4026532500
	if ns != want {
		t.Errorf("got %v, want %v (unreadable and malformed links stay 0)", ns, want)
	}
	if _, err := ReadNS(root, "43"); err == nil {
		t.Error("a process with no links should report an error")
	}
}

func TestReadNSSelf(t *testing.T) {
	ns, err := ReadNS(ProcRoot, "self")
	if err != nil {
		t.Fatal(err)
	}
	if ns[event.NSNet] == 0 || ns[event.NSMnt] == 0 {
		t.Errorf("own namespaces unknown: %v", ns)
	}
}

func TestParseLink(t *testing.T) {
	for in, want := range map[string]uint64{"net:[4026531840]": 4026531840, "pid_for_children:[1]": 1} {
		if _, got, ok := ParseLink(in); !ok || got != want {
			t.Errorf("ParseLink(%q) = %d %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "net:", "net:[x]", "[1]", "net:[1"} {
		if _, _, ok := ParseLink(in); ok {
			t.Errorf("ParseLink(%q) accepted", in)
		}
	}
}

func TestNSpid(t *testing.T) {
	root := fakeProc(t, "4242", nil, "Name:\tsh\nTgid:\t4242\nNSpid:\t4242\t17\t1\nPPid:\t1\n")
	if n, err := NSpid(root, "4242"); err != nil || n != 1 {
		t.Errorf("NSpid = %d, %v; want 1", n, err)
	}
	root = fakeProc(t, "7", nil, "Name:\tsh\n")
	if _, err := NSpid(root, "7"); err == nil {
		t.Error("missing NSpid line accepted")
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
}

func TestCgroupPathWithoutHierarchy(t *testing.T) {
	c := NewCgroups(filepath.Join(t.TempDir(), "missing"))
	defer c.Close()
	if p := c.Path(1); p != "" {
		t.Errorf("path %q without a hierarchy", p)
	}
}
