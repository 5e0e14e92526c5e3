// SPDX-License-Identifier: Apache-2.0

package nslist

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/procfs"
	"github.com/nstrace/nstrace/internal/procfs/procfstest"
)

// v1Host is a fake /proc and a hierarchy of the pids controller, as on a
// host whose runtime puts containers in cgroup v1 only: in one net
// namespace a Docker container (v1box) known by its pids cgroup, a
// process in a pids cgroup of no container, both in the v2 root, and one
// in a v2 cgroup of its own.
func v1Host(t *testing.T) (string, ns.Set, container.Roots) {
	root, base := t.TempDir(), t.TempDir()
	roots := container.Roots{Docker: filepath.Join(base, "docker"),
		Cgroups: procfs.Hierarchies{V2: filepath.Join(base, "unified"), V1: filepath.Join(base, "pids"), Controller: "pids"}}
	for _, dir := range []string{"docker/" + loneID, "v1demo"} {
		if err := os.MkdirAll(filepath.Join(roots.Cgroups.V1, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(roots.Docker, loneID, "config.v2.json"), `{"Name":"/v1box","Config":{"Image":"busybox"}}`)
	var host ns.Set
	host[ns.Net] = 4026531840
	proc := func(pid, comm, cgroup string) {
		procfstest.Process(t, root, pid, comm, map[string]string{"net": "net:[4026532700]"})
		write(t, filepath.Join(root, pid, "cgroup"), cgroup)
	}
	proc("700", "sleep", "8:pids:/docker/"+loneID+"\n4:memory:/docker/"+loneID+"\n0::/\n")
	proc("710", "sh", "8:pids:/v1demo\n0::/\n")
	proc("720", "sh", "8:pids:/v1demo\n0::/v2demo\n")
	return root, host, roots
}

// A cgroup of the v1 hierarchy is marked with its controller wherever a
// listing gives a path: cgroup_v1 in JSON, "(pids, v1)" in a table and
// in -p's header; a v2 path is not.
func TestCgroupV1Golden(t *testing.T) {
	root, host, roots := v1Host(t)
	for _, c := range []struct {
		file string
		q    Query
	}{
		{"cgroupv1-procs.txt", Query{Inode: 4026532700, Type: ns.Net}},
		{"cgroupv1-procs.json", Query{Inode: 4026532700, Type: ns.Net, JSON: true}},
		{"cgroupv1-pid-700.txt", Query{PID: 700}},
		{"cgroupv1-pid-720.txt", Query{PID: 720}},
	} {
		var out bytes.Buffer
		if err := run(root, host, roots, c.q, &out); err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		golden(t, c.file, out.Bytes())
	}
	var out bytes.Buffer
	if err := run(root, host, roots, Query{Inode: 4026532700, Type: ns.Net, JSON: true}, &out); err != nil {
		t.Fatal(err)
	}
	want := map[uint32]string{700: "pids", 710: "pids", 720: ""}
	for dec := json.NewDecoder(&out); dec.More(); {
		var r procRow
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		if r.CgroupV1 != want[r.PID] {
			t.Errorf("pid %d in %s: cgroup_v1 %q, want %q", r.PID, r.Cgroup, r.CgroupV1, want[r.PID])
		}
	}
}
