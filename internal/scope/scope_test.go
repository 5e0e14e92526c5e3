// SPDX-License-Identifier: Apache-2.0

package scope

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/procfs"
)

func TestParseNSSpec(t *testing.T) {
	cases := []struct {
		in   string
		want NSSpec
		err  string
	}{
		{"4026532397", NSSpec{AnyType: true, Inode: 4026532397}, ""},
		{"net:4026532397", NSSpec{Type: ns.Net, Inode: 4026532397}, ""},
		{"pid:4026532397", NSSpec{Type: ns.Pid, Inode: 4026532397}, ""},
		{"pid:4242", NSSpec{AnyType: true, PID: 4242}, ""},
		{"net:pid:4242", NSSpec{Type: ns.Net, PID: 4242}, ""},
		{"pid_for_children:pid:1", NSSpec{Type: ns.PidForChildren, PID: 1}, ""},
		{"bogus:4026532397", NSSpec{}, `unknown namespace type "bogus"`},
		{"net:x", NSSpec{}, "not an inode or pid"},
		{"net:pid:4026532397", NSSpec{}, "is not a process id"},
		{"net:foo:1", NSSpec{}, "want TYPE:pid:PID"},
		{"a:b:c:d", NSSpec{}, "want INODE"},
		{"0", NSSpec{}, "not an inode"},
	}
	for _, c := range cases {
		got, err := ParseNSSpec(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %+v %v, want %+v", c.in, got, err, c.want)
		}
	}
}

func TestUserFilter(t *testing.T) {
	host := ns.Set{1, 2, 3, 4, 5, 5, 6, 6, 7, 8}
	in := event.Event{Kind: event.Exec, Comm: []byte("sh"), NS: host}
	out := in
	out.NS[ns.Net] = 99
	f := (&Scope{Comms: []string{"sh", "ps"}}).UserFilter(host)
	if !f.Pass(&in) || f.Pass(&event.Event{Comm: []byte("bash")}) {
		t.Error("--comm")
	}
	f = (&Scope{OnlyHost: true}).UserFilter(host)
	if !f.Pass(&in) || f.Pass(&out) {
		t.Error("--host")
	}
	f = (&Scope{NotHost: true}).UserFilter(host)
	if f.Pass(&in) || !f.Pass(&out) {
		t.Error("--no-host")
	}
	// --ns-changes: a fork into a new net namespace passes, a plain fork,
	// an exec and a setns that changed nothing do not.
	f = (&Scope{NSChanges: true}).UserFilter(host)
	moved := event.Event{Kind: event.Fork, NS: host, ChildNS: out.NS}
	plain := event.Event{Kind: event.Fork, NS: host, ChildNS: host}
	noop := event.Event{Kind: event.Setns, NS: host, PrevNS: host}
	if !f.Pass(&moved) || f.Pass(&plain) || f.Pass(&in) || f.Pass(&noop) {
		t.Error("--ns-changes")
	}
}

func TestParsePIDs(t *testing.T) {
	got, err := ParsePIDs([]string{"1", " 22"})
	if err != nil || len(got) != 2 || got[0] != 1 || got[1] != 22 {
		t.Errorf("ParsePIDs = %v %v", got, err)
	}
	for _, bad := range []string{"0", "x", "4194305", "-1"} {
		if _, err := ParsePIDs([]string{bad}); err == nil {
			t.Errorf("ParsePIDs(%q) accepted", bad)
		}
	}
}

func TestKernelFilter(t *testing.T) {
	host := ns.Set{1, 2, 3, 4, 5, 5, 6, 6, 7, 8}
	s := Scope{NS: []NSSpec{{AnyType: true, Inode: 77}, {Type: ns.Net, Inode: 78}, {Type: ns.UTS, Inode: 78}}, PIDs: []uint32{uint32(os.Getpid())}, Follow: true}
	f, err := s.KernelFilter(procfs.Root, host, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Tracked || !f.Follow || len(f.PIDs) != 1 {
		t.Errorf("traced set: %+v", f)
	}
	got := map[uint64]ns.Mask{}
	for _, r := range f.Namespaces {
		got[r.Inode] = r.Types
	}
	if len(got) != 2 || got[77] != ns.All || got[78] != ns.MaskOf(ns.Net, ns.UTS) {
		t.Errorf("namespace references %v", got)
	}
	if _, err := (&Scope{PIDs: []uint32{MaxPID}}).KernelFilter(procfs.Root, host, nil); err == nil || !strings.Contains(err.Error(), "no such process") {
		t.Errorf("a missing --pid: %v", err)
	}
}

// The follower adds to the kernel's filter, once each, the cgroups of the
// containers a reference names (a pod made again under its name, a
// container run again under its name), none other's; its first failure
// is told; once stopped, it adds nothing.
func TestCgroupFollower(t *testing.T) {
	type added struct {
		id uint64
		v1 bool
	}
	var got []added
	full := false
	var failures []error
	s := Scope{Containers: []string{"shop/web", "db"}}
	f := s.CgroupFollower(func(id uint64, v1 bool) error {
		if full {
			return errors.New("full")
		}
		got = append(got, added{id, v1})
		return nil
	}, func(err error) { failures = append(failures, err) })

	web := func(uid string) container.Info {
		return container.Info{ID: uid + "c", Runtime: "containerd", Pod: &event.Pod{Name: "web", Namespace: "shop", UID: uid, Container: "app"}}
	}
	f.Learn(web("1"), container.CgroupKey{ID: 10})
	f.Learn(web("1"), container.CgroupKey{ID: 10}) // its state read again
	f.Learn(web("2"), container.CgroupKey{ID: 20}) // made again
	f.Learn(web("2"), container.CgroupKey{ID: 21, V1: true})
	f.Learn(container.Info{ID: "x", Name: "db", Runtime: "docker"}, container.CgroupKey{ID: 30})
	f.Learn(container.Info{ID: "y", Runtime: "containerd", Pod: &event.Pod{Name: "web", Namespace: "test", Container: "app"}}, container.CgroupKey{ID: 40})
	f.Learn(container.Info{ID: "z", Name: "api", Runtime: "docker"}, container.CgroupKey{ID: 50})
	if want := []added{{10, false}, {20, false}, {21, true}, {30, false}}; !slices.Equal(got, want) {
		t.Errorf("added %v, want %v", got, want)
	}

	full = true
	f.Learn(web("3"), container.CgroupKey{ID: 60})
	f.Learn(web("4"), container.CgroupKey{ID: 70})
	if len(failures) != 1 || !strings.Contains(failures[0].Error(), "--container shop/web: web/app: full") {
		t.Errorf("failures %v, want the first one", failures)
	}
	full = false
	f.Stop()
	f.Learn(web("5"), container.CgroupKey{ID: 80})
	if len(got) != 4 {
		t.Errorf("stopped, it added %v", got[4:])
	}
}
