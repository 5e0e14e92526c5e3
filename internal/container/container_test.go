// SPDX-License-Identifier: Apache-2.0

package container

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/procfs"
)

const id = "3f2a8e8c1b7d4c5e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60"
const pod = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"

func TestFromCgroupNames(t *testing.T) {
	cases := []struct {
		name, parent string
		want         Info
	}{
		// Docker, systemd and cgroupfs drivers.
		{"docker-" + id + ".scope", "system.slice", Info{ID: id, Runtime: "docker"}},
		{id, "docker", Info{ID: id, Runtime: "docker"}},
		// containerd's CRI under Kubernetes, systemd driver.
		{"cri-containerd-" + id + ".scope", "kubepods-burstable-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice",
			Info{ID: id, Runtime: "containerd", Pod: &event.Pod{UID: pod}}},
		// Kubernetes, cgroupfs driver: the runtime's state says whose.
		{id, "pod" + pod, Info{ID: id, Pod: &event.Pod{UID: pod}}},
		{"crio-" + id + ".scope", "kubepods-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice",
			Info{ID: id, Runtime: "cri-o", Pod: &event.Pod{UID: pod}}},
		// CRI-O alone, Podman with systemd (and its nested payload) and cgroupfs.
		{"crio-" + id + ".scope", "machine.slice", Info{ID: id, Runtime: "cri-o"}},
		{"libpod-" + id + ".scope", "machine.slice", Info{ID: id, Runtime: "podman"}},
		{"container", "libpod-" + id + ".scope", Info{ID: id, Runtime: "podman"}},
		{"libpod-" + id, "libpod_parent", Info{ID: id, Runtime: "podman"}},
	}
	for _, c := range cases {
		got, ok := FromCgroup(Cgroup{Name: c.name, Parent: c.parent})
		if !ok || got.ID != c.want.ID || got.Runtime != c.want.Runtime || (got.Pod == nil) != (c.want.Pod == nil) ||
			(got.Pod != nil && *got.Pod != *c.want.Pod) {
			t.Errorf("%s/%s:\n got %+v %v\nwant %+v", c.parent, c.name, got, ok, c.want)
		}
	}
	for _, cg := range []Cgroup{{}, {Name: "session-2.scope", Parent: "user-1000.slice"}, {Name: "docker.service", Parent: "system.slice"},
		{Name: "libpod-conmon-" + id + ".scope", Parent: "machine.slice"}, {Name: "notanid", Parent: "docker"}, {Name: "init.scope"},
		{Name: "mybox"}} {
		if got, ok := FromCgroup(cg); ok {
			t.Errorf("%+v: recognised as %+v", cg, got)
		}
	}
}

func TestShort(t *testing.T) {
	if s := (&Info{ID: id}).Short(); s != id[:12] {
		t.Errorf("short id %s", s)
	}
	if s := (&Info{ID: id, Name: "web"}).Short(); s != "web" {
		t.Errorf("named %s", s)
	}
	if s := (&Info{ID: id, Name: "x", Pod: &event.Pod{Name: "api-1", Container: "app"}}).Short(); s != "api-1/app" {
		t.Errorf("pod container %s", s)
	}
}

// fakeHost lays out runtime state under a temp dir.
type fakeHost struct {
	t     *testing.T
	roots Roots
}

func newFakeHost(t *testing.T) *fakeHost {
	dir := t.TempDir()
	return &fakeHost{t: t, roots: Roots{
		Cgroups: procfs.Hierarchies{V2: filepath.Join(dir, "cgroup")},
		Runc:    []string{filepath.Join(dir, "run", "runc"), filepath.Join(dir, "run", "containerd", "runc", "*"), filepath.Join(dir, "run", "docker", "runtime-runc", "*")},
		Docker:  filepath.Join(dir, "docker"),
		Podman:  []string{filepath.Join(dir, "storage", "containers.json")},
		CRIO:    filepath.Join(dir, "crio"),
	}}
}

func (h *fakeHost) write(path string, v any) {
	h.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		h.t.Fatal(err)
	}
	b, _ := json.Marshal(v)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// container makes a cgroup directory and a runc state for it; it returns
// the cgroup as the kernel would name it.
func (h *fakeHost) container(stateRoot, cid, cgPath string, annotations map[string]string) Cgroup {
	h.t.Helper()
	return h.containerIn(stateRoot, cid, cgPath, annotations, map[string]string{"": h.roots.Cgroups.V2})[""]
}

// containerIn is container with a cgroup at cgPath in each hierarchy
// given, by runc's name for it ("" for v2, a controller's for v1) and
// mount point; it returns the cgroups by that name.
func (h *fakeHost) containerIn(stateRoot, cid, cgPath string, annotations map[string]string, hierarchies map[string]string) map[string]Cgroup {
	h.t.Helper()
	paths, cgroups := map[string]string{}, map[string]Cgroup{}
	for name, root := range hierarchies {
		paths[name] = filepath.Join(root, cgPath)
		if err := os.MkdirAll(paths[name], 0o755); err != nil {
			h.t.Fatal(err)
		}
		cg := CgroupOfPath(root, "/"+cgPath)
		cg.V1 = name != ""
		cgroups[name] = cg
	}
	bundle := filepath.Join(filepath.Dir(h.roots.Cgroups.V2), "bundles", cid)
	h.write(filepath.Join(bundle, "config.json"), map[string]any{"annotations": annotations})
	h.write(filepath.Join(stateRoot, cid, "state.json"), map[string]any{
		"id": cid, "init_process_pid": 4242, "cgroup_paths": paths,
		"config": map[string]any{"labels": []string{"bundle=" + bundle}},
	})
	return cgroups
}

// lookup is a cgroup and the container the registry must name for it.
type lookup struct {
	cg   Cgroup
	want Info
}

func checkLookups(t *testing.T, r *Registry, lookups []lookup) {
	t.Helper()
	for _, c := range lookups {
		got := r.Lookup(c.cg)
		if got == nil || got.ID != c.want.ID || got.Name != c.want.Name || got.Runtime != c.want.Runtime || got.Image != c.want.Image ||
			(got.Pod == nil) != (c.want.Pod == nil) || (got.Pod != nil && *got.Pod != *c.want.Pod) {
			t.Errorf("%+v:\n got %+v\nwant %+v", c.cg, got, c.want)
		}
	}
}

func TestRegistryRuntimes(t *testing.T) {
	h := newFakeHost(t)
	run := filepath.Dir(h.roots.Runc[0])
	plain := h.container(filepath.Join(run, "runc"), "mybox", "mybox", nil)
	ctr := h.container(filepath.Join(run, "containerd", "runc", "default"), "job7", "default/job7", nil)
	dock := h.container(filepath.Join(run, "docker", "runtime-runc", "moby"), id, "docker/"+id, nil)
	h.write(filepath.Join(h.roots.Docker, id, "config.v2.json"), map[string]any{"Name": "/web", "Config": map[string]any{"Image": "busybox:latest"}})
	podID := "9" + id[1:]
	podman := h.container(filepath.Join(run, "runc"), podID, "libpod_parent/libpod-"+podID, nil)
	h.write(h.roots.Podman[0], []map[string]any{{"id": podID, "names": []string{"pod1"}, "metadata": `{"image-name":"localhost/bb:1"}`}})
	k8sID := "8" + id[1:]
	k8s := h.container(filepath.Join(run, "containerd", "runc", "k8s.io"), k8sID,
		"kubepods/besteffort/pod"+pod+"/"+k8sID, map[string]string{
			"io.kubernetes.cri.sandbox-name": "api-1", "io.kubernetes.cri.sandbox-namespace": "shop",
			"io.kubernetes.cri.container-name": "app", "io.kubernetes.cri.image-name": "shop/app:2",
		})

	// Podman's container that its containers.json does not list, and
	// CRI-O's outside a pod, in runc's own state: the id is no name.
	unlistedID, crioID := "a"+id[1:], "b"+id[1:]
	unlisted := h.container(filepath.Join(run, "runc"), unlistedID, "libpod_parent/libpod-"+unlistedID, nil)
	crio := h.container(filepath.Join(run, "runc"), crioID, "machine.slice/crio-"+crioID+".scope", nil)

	r := NewRegistry(h.roots, false)
	defer r.Close()
	checkLookups(t, r, []lookup{
		{unlisted, Info{ID: unlistedID, Runtime: "podman"}},
		{crio, Info{ID: crioID, Runtime: "cri-o"}},
		{plain, Info{ID: "mybox", Name: "mybox", Runtime: "runc"}},
		{ctr, Info{ID: "job7", Name: "job7", Runtime: "containerd"}},
		{dock, Info{ID: id, Name: "web", Runtime: "docker", Image: "busybox:latest"}},
		{podman, Info{ID: podID, Name: "pod1", Runtime: "podman", Image: "localhost/bb:1"}},
		{k8s, Info{ID: k8sID, Runtime: "containerd", Image: "shop/app:2", Pod: &event.Pod{Name: "api-1", Namespace: "shop", UID: pod, Container: "app"}}},
	})
	if c := r.Lookup(Cgroup{ID: 12345, Name: "session-1.scope", Parent: "user.slice"}); c != nil {
		t.Errorf("a host cgroup in a container: %+v", c)
	}
	// Cgroups a user made in a subtree of their own, named after
	// containers runc's state puts elsewhere, are none of them.
	for _, forged := range []Cgroup{
		{ID: 23456, Name: "docker-" + id + ".scope", Parent: "user@1000.service"},
		{ID: 23457, Name: id, Parent: "docker"},
		{ID: 23458, Name: k8sID, Parent: "pod" + pod},
		{ID: 23459, Name: "libpod-" + podID, Parent: "libpod_parent"},
	} {
		if c := r.Lookup(forged); c != nil {
			t.Errorf("%+v, only named like a container, is %+v", forged, c)
		}
	}

	found, err := r.Find("web")
	if err != nil || len(found) != 1 || found[dock.Key()].ID != id {
		t.Errorf("find by name: %v %v", found, err)
	}
	if found, err := r.Find(id[:5]); err != nil || len(found) != 1 || found[dock.Key()].Name != "web" {
		t.Errorf("find by id prefix: %v %v", found, err)
	}
	// A runc id is the name it was given: a part of it names nothing.
	if found, err := r.Find("myb"); err != nil || len(found) != 0 {
		t.Errorf("a part of a runc id's name: %v %v", found, err)
	}
	if found, _ := r.Find("api-1/app"); len(found) != 1 {
		t.Errorf("find a pod's container: %v", found)
	}
	if found, err := r.Find("nope"); err != nil || len(found) != 0 {
		t.Errorf("a container not there: %v %v", found, err)
	}
}

// On cgroup v1, runc keeps a container's path in each controller's
// hierarchy: each runtime's containers are found from their cgroup in the
// v1 hierarchy that identifies them, as from v2's, whose ids are another
// space: a v1 cgroup never stands for the v2 one with its id.
func TestRegistryCgroupV1(t *testing.T) {
	h := newFakeHost(t)
	base := filepath.Dir(h.roots.Cgroups.V2)
	h.roots.Cgroups.V1, h.roots.Cgroups.Controller = filepath.Join(base, "pids"), "pids"
	v1 := map[string]string{"pids": h.roots.Cgroups.V1, "memory": filepath.Join(base, "memory"), "name=systemd": filepath.Join(base, "systemd")}
	hybrid := map[string]string{"": h.roots.Cgroups.V2, "pids": h.roots.Cgroups.V1}
	run := filepath.Dir(h.roots.Runc[0])
	plain := h.containerIn(filepath.Join(run, "runc"), "mybox", "mybox", nil, v1)["pids"]
	ctr := h.containerIn(filepath.Join(run, "containerd", "runc", "default"), "job7", "default/job7", nil, v1)["pids"]
	dock := h.containerIn(filepath.Join(run, "docker", "runtime-runc", "moby"), id, "docker/"+id, nil, hybrid)
	h.write(filepath.Join(h.roots.Docker, id, "config.v2.json"), map[string]any{"Name": "/web"})
	podID := "9" + id[1:]
	podman := h.containerIn(filepath.Join(run, "runc"), podID, "libpod_parent/libpod-"+podID, nil, v1)["pids"]
	h.write(h.roots.Podman[0], []map[string]any{{"id": podID, "names": []string{"pod1"}}})
	k8sID := "8" + id[1:]
	k8s := h.containerIn(filepath.Join(run, "containerd", "runc", "k8s.io"), k8sID, "kubepods/burstable/pod"+pod+"/"+k8sID,
		map[string]string{"io.kubernetes.cri.sandbox-name": "api-1", "io.kubernetes.cri.sandbox-namespace": "shop", "io.kubernetes.cri.container-name": "app"}, v1)["pids"]

	// A runc before 1.0 names no v2 cgroup in its state: on a hybrid
	// host, the v2 cgroup systemd made for Docker's container is named
	// by its name, which the state does not contradict.
	oldID := "c" + id[1:]
	h.containerIn(filepath.Join(run, "docker", "runtime-runc", "moby"), oldID, "system.slice/docker-"+oldID+".scope", nil, v1)
	oldV2 := filepath.Join(h.roots.Cgroups.V2, "system.slice", "docker-"+oldID+".scope")
	if err := os.MkdirAll(oldV2, 0o755); err != nil {
		t.Fatal(err)
	}

	r := NewRegistry(h.roots, false)
	defer r.Close()
	checkLookups(t, r, []lookup{
		{CgroupOfPath(h.roots.Cgroups.V2, "/system.slice/docker-"+oldID+".scope"), Info{ID: oldID, Runtime: "docker"}},
		{plain, Info{ID: "mybox", Name: "mybox", Runtime: "runc"}},
		{ctr, Info{ID: "job7", Name: "job7", Runtime: "containerd"}},
		{dock["pids"], Info{ID: id, Name: "web", Runtime: "docker"}},
		{dock[""], Info{ID: id, Name: "web", Runtime: "docker"}},
		{podman, Info{ID: podID, Name: "pod1", Runtime: "podman"}},
		{k8s, Info{ID: k8sID, Runtime: "containerd", Pod: &event.Pod{Name: "api-1", Namespace: "shop", UID: pod, Container: "app"}}},
	})
	// The v2 cgroup with plain runc's v1 id, and the v1 one with Docker's
	// v2 id, are nobody's.
	if c := r.Lookup(Cgroup{ID: plain.ID, Name: "session-1.scope", Parent: "user.slice"}); c != nil {
		t.Errorf("a v2 cgroup taken for the v1 one with its id: %+v", c)
	}
	if c := r.Lookup(Cgroup{ID: dock[""].ID, V1: true, Name: "x"}); c != nil {
		t.Errorf("a v1 cgroup taken for the v2 one with its id: %+v", c)
	}
	// /proc/PID/cgroup's v1 line names the same container.
	if c := r.LookupPath("/mybox", true); c == nil || c.ID != "mybox" {
		t.Errorf("by its v1 path: %+v", c)
	}
	found, err := r.Find("mybox")
	if err != nil || len(found) != 1 || found[plain.Key()].ID != "mybox" {
		t.Errorf("find on v1: %v %v", found, err)
	}
	if found, _ := r.Find("web"); len(found) != 2 || found[dock["pids"].Key()].ID != id || found[dock[""].Key()].ID != id {
		t.Errorf("find on both: %v", found)
	}
	// A pod's container: the kernel filters on its pod's v1 cgroup.
	podCgroup := CgroupKey{inode(filepath.Join(h.roots.Cgroups.V1, "kubepods", "burstable", "pod"+pod)), true}
	if keys, err := r.KernelCgroups("api-1/app"); err != nil || len(keys) != 1 || keys[0] != podCgroup {
		t.Errorf("--container api-1/app: cgroups %v %v, want the pod's %v", keys, err, podCgroup)
	}
}

// A container whose state appears after nstrace started is learned from
// the watch, and still named once its state is gone.
func TestRegistryWatchesAndRemembers(t *testing.T) {
	h := newFakeHost(t)
	run := filepath.Dir(h.roots.Runc[0])
	if err := os.MkdirAll(filepath.Join(run, "runc"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := NewRegistry(h.roots, true)
	defer r.Close()
	cg := h.container(filepath.Join(run, "runc"), "quick", "quick", nil)
	var got *Info
	for deadline := time.Now().Add(5 * time.Second); got == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got = r.Lookup(cg)
	}
	if got == nil || got.Name != "quick" {
		t.Fatalf("a container created after start: %+v", got)
	}
	if err := os.RemoveAll(filepath.Join(run, "runc", "quick")); err != nil {
		t.Fatal(err)
	}
	if got := r.Lookup(cg); got == nil || got.Name != "quick" {
		t.Errorf("a container whose state is gone: %+v", got)
	}
	// A container come and gone before anyone looked: its state went
	// with it, the watch saw its directory made.
	gone := h.container(filepath.Join(run, "runc"), "gone", "gone", nil)
	if err := os.RemoveAll(filepath.Join(run, "runc", "gone")); err != nil {
		t.Fatal(err)
	}
	if got := r.Lookup(gone); got == nil || got.ID != "gone" || got.Runtime != "runc" {
		t.Errorf("a container gone before its lookup: %+v", got)
	}
	// A later container in a cgroup of the same path is another cgroup.
	if err := os.RemoveAll(filepath.Join(h.roots.Cgroups.V2, "quick")); err != nil {
		t.Fatal(err)
	}
	again := h.container(filepath.Join(run, "runc"), "quick2", "quick", nil)
	if again.ID == cg.ID {
		t.Skip("the file system reused the inode") // tmpfs may; cgroupfs never does
	}
}

// A Docker container started again keeps its id, in a new cgroup of the
// same name: once runc's state says so, that cgroup is the container's,
// whether the watch tells of the state or a lookup reads it again.
func TestRegistryRestartedContainer(t *testing.T) {
	for _, watch := range []bool{true, false} {
		t.Run(fmt.Sprintf("watch=%v", watch), func(t *testing.T) { testRestartedContainer(t, watch) })
	}
}

func testRestartedContainer(t *testing.T, watch bool) {
	h := newFakeHost(t)
	state := filepath.Join(filepath.Dir(h.roots.Runc[0]), "docker", "runtime-runc", "moby")
	first := h.container(state, id, "docker/"+id, nil)
	h.write(filepath.Join(h.roots.Docker, id, "config.v2.json"), map[string]any{"Name": "/web"})
	r := NewRegistry(h.roots, watch)
	defer r.Close()
	if c := r.Lookup(first); c == nil || c.Name != "web" {
		t.Fatalf("the container: %+v", c)
	}
	if err := os.RemoveAll(filepath.Join(h.roots.Cgroups.V2, "docker", id)); err != nil {
		t.Fatal(err)
	}
	// Kept while the first is: a file system may give a new directory a
	// free inode again, cgroupfs never does.
	keep := filepath.Join(h.roots.Cgroups.V2, "keep")
	if err := os.MkdirAll(keep, 0o755); err != nil {
		t.Fatal(err)
	}
	second := h.container(state, id, "docker/"+id, nil)
	if second.ID == first.ID {
		t.Skip("the file system reused the inode")
	}
	var c *Info
	for deadline := time.Now().Add(5 * time.Second); c == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		c = r.Lookup(second)
	}
	if c == nil || c.ID != id || c.Name != "web" {
		t.Errorf("the container started again: %+v", c)
	}
}

// podContainer writes the runc state of a pod's container (or sandbox,
// with no name) as containerd's CRI leaves it, in the pod's cgroup, and
// returns its cgroup.
func (h *fakeHost) podContainer(podNS, podName, uid, cid, name string) Cgroup {
	h.t.Helper()
	podDir := "kubepods/besteffort/pod" + uid
	cgDir := filepath.Join(h.roots.Cgroups.V2, podDir, cid)
	if err := os.MkdirAll(cgDir, 0o755); err != nil {
		h.t.Fatal(err)
	}
	typ := "sandbox"
	labels := []string{"io.kubernetes.cri.sandbox-name=" + podName, "io.kubernetes.cri.sandbox-namespace=" + podNS,
		"io.kubernetes.cri.sandbox-uid=" + uid, "bundle=/nonexistent/" + cid}
	if name != "" {
		typ = "container"
		labels = append(labels, "io.kubernetes.cri.container-name="+name, "io.kubernetes.cri.image-name=busybox")
	}
	h.write(filepath.Join(filepath.Dir(h.roots.Runc[0]), "containerd", "runc", "k8s.io", cid, "state.json"), map[string]any{
		"id": cid, "init_process_pid": 4242, "cgroup_paths": map[string]string{"": cgDir},
		"config": map[string]any{"labels": append(labels, "io.kubernetes.cri.container-type="+typ)},
	})
	return CgroupOfPath(h.roots.Cgroups.V2, "/"+podDir+"/"+cid)
}

// Pods of one name in two namespaces: the bare name is ambiguous, and
// the error names each as NAMESPACE/POD; NAMESPACE/POD is one of them.
func TestRegistryPodsOfOneName(t *testing.T) {
	h := newFakeHost(t)
	other := "1" + pod[1:]
	h.podContainer("shop", "web", pod, "5"+id[1:], "")
	h.podContainer("shop", "web", pod, "6"+id[1:], "app")
	h.podContainer("test", "web", other, "7"+id[1:], "")
	h.podContainer("test", "web", other, "8"+id[1:], "app")
	h.podContainer("test", "db", "2"+pod[1:], "9"+id[1:], "app")
	r := NewRegistry(h.roots, false)
	defer r.Close()

	if found, err := r.Find("web"); err == nil || err.Error() != `container "web" is ambiguous: pods shop/web, test/web` {
		t.Errorf("--container web: %v %v", found, err)
	}
	if found, err := r.Find("web/app"); err == nil || !strings.Contains(err.Error(), "6"+id[1:]) || !strings.Contains(err.Error(), "8"+id[1:]) {
		t.Errorf("--container web/app: %v %v", found, err)
	}
	found, err := r.Find("shop/web")
	if err != nil || len(found) != 2 {
		t.Errorf("--container shop/web: %v %v", found, err)
	}
	for _, c := range found {
		if c.Pod.Namespace != "shop" {
			t.Errorf("--container shop/web matches %+v", c.Pod)
		}
	}
	if found, err := r.Find("db"); err != nil || len(found) != 1 {
		t.Errorf("--container db, one pod: %v %v", found, err)
	}
	if keys, err := r.KernelCgroups("shop/web"); err != nil || len(keys) != 1 || keys[0] != (CgroupKey{ID: inode(filepath.Join(h.roots.Cgroups.V2, "kubepods/besteffort/pod"+pod))}) {
		t.Errorf("--container shop/web: cgroups %v %v", keys, err)
	}
}

// A pod as containerd's CRI and runc 1.1 leave it with the cgroupfs
// driver: the annotations in runc's state labels (the bundle they name
// need not be readable), the sandbox marked, the containers named; a
// pod's name, or one of its containers, filters in the kernel on the
// pod's cgroup, where its later containers go too.
func TestRegistryPods(t *testing.T) {
	h := newFakeHost(t)
	state := filepath.Join(filepath.Dir(h.roots.Runc[0]), "containerd", "runc", "k8s.io")
	podDir := "kubepods/besteffort/pod" + pod
	container := func(cid, typ, name string) Cgroup {
		cgDir := filepath.Join(h.roots.Cgroups.V2, podDir, cid)
		if err := os.MkdirAll(cgDir, 0o755); err != nil {
			t.Fatal(err)
		}
		labels := []string{"io.kubernetes.cri.container-type=" + typ, "io.kubernetes.cri.sandbox-name=web",
			"io.kubernetes.cri.sandbox-namespace=shop", "io.kubernetes.cri.sandbox-uid=" + pod, "bundle=/nonexistent/" + cid}
		if name != "" {
			labels = append(labels, "io.kubernetes.cri.container-name="+name, "io.kubernetes.cri.image-name=busybox")
		}
		h.write(filepath.Join(state, cid, "state.json"), map[string]any{
			"id": cid, "init_process_pid": 4242, "cgroup_paths": map[string]string{"": cgDir},
			"config": map[string]any{"labels": labels},
		})
		return CgroupOfPath(h.roots.Cgroups.V2, "/"+podDir+"/"+cid)
	}
	sandboxID, appID := "5"+id[1:], "6"+id[1:]
	sandbox, app := container(sandboxID, "sandbox", ""), container(appID, "container", "app")

	r := NewRegistry(h.roots, false)
	defer r.Close()
	for _, c := range []struct {
		cg   Cgroup
		want Info
	}{
		{sandbox, Info{ID: sandboxID, Runtime: "containerd", Pod: &event.Pod{Name: "web", Namespace: "shop", UID: pod, Sandbox: true}}},
		{app, Info{ID: appID, Runtime: "containerd", Image: "busybox", Pod: &event.Pod{Name: "web", Namespace: "shop", UID: pod, Container: "app"}}},
	} {
		got := r.Lookup(c.cg)
		if got == nil || got.ID != c.want.ID || got.Name != "" || got.Runtime != c.want.Runtime || got.Image != c.want.Image ||
			got.Pod == nil || *got.Pod != *c.want.Pod {
			t.Errorf("%+v:\n got %+v %+v\nwant %+v %+v", c.cg, got, got.Pod, c.want, c.want.Pod)
		}
	}
	if s := r.Lookup(sandbox).Short(); s != "web/(sandbox)" {
		t.Errorf("the sandbox is called %q", s)
	}

	podCgroup := inode(filepath.Join(h.roots.Cgroups.V2, podDir))
	for _, ref := range []string{"shop/web", "web", "web/app", "web/(sandbox)", appID[:12]} {
		ids, err := r.KernelCgroups(ref)
		if err != nil || len(ids) != 1 || ids[0] != (CgroupKey{ID: podCgroup}) {
			t.Errorf("--container %s: cgroups %v %v, want the pod's %d", ref, ids, err, podCgroup)
		}
	}
	for ref, want := range map[string]string{"web/app": appID, "web/(sandbox)": sandboxID, "shop/web": ""} {
		found, _ := r.Find(ref)
		for _, c := range found {
			if want != "" && c.ID != want {
				t.Errorf("--container %s matches %s", ref, c.ID)
			}
		}
		if want == "" && len(found) != 2 || want != "" && len(found) != 1 {
			t.Errorf("--container %s: %v", ref, found)
		}
	}
	if ids, err := r.KernelCgroups("web/"); err != nil || len(ids) != 0 {
		t.Errorf("--container web/: %v %v", ids, err)
	}

	// A container the pod starts after the registry's scan, which the
	// cgroup's name alone does not say whose: the state is read again.
	lateID := "7" + id[1:]
	if c := r.Lookup(container(lateID, "container", "late")); c == nil || c.ID != lateID || c.Pod == nil || c.Pod.Container != "late" {
		t.Errorf("a pod's container started after the scan: %+v", c)
	}
}

// OnContainer is told of the containers known, then of each the watch
// learns, with the cgroup the kernel filters on for it: a pod's
// container's pod's, another container's own.
func TestRegistryOnContainer(t *testing.T) {
	h := newFakeHost(t)
	run := filepath.Dir(h.roots.Runc[0])
	plain := h.container(filepath.Join(run, "runc"), "mybox", "mybox", nil)
	h.podContainer("shop", "web", pod, "5"+id[1:], "")
	r := NewRegistry(h.roots, true)
	defer r.Close()
	type told struct {
		id string
		cg CgroupKey
	}
	var mu sync.Mutex
	var got []told
	r.OnContainer(func(c Info, cg CgroupKey) {
		mu.Lock()
		got = append(got, told{c.ID, cg})
		mu.Unlock()
	})
	other := "1" + pod[1:]
	h.podContainer("shop", "web", other, "6"+id[1:], "") // the pod, made again
	h.podContainer("shop", "web", other, "7"+id[1:], "app")
	podCgroup := func(uid string) CgroupKey {
		return CgroupKey{ID: inode(filepath.Join(h.roots.Cgroups.V2, "kubepods/besteffort/pod"+uid))}
	}
	want := []told{{"mybox", plain.Key()}, {"5" + id[1:], podCgroup(pod)}, {"6" + id[1:], podCgroup(other)}, {"7" + id[1:], podCgroup(other)}}
	seen := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, w := range want {
			if !slices.Contains(got, w) {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(5 * time.Second); !seen() && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	}
	if !seen() {
		mu.Lock()
		t.Errorf("told %v, want %v", got, want)
		mu.Unlock()
	}
}

// A reference names a container by its id, its name, a hex prefix of its
// id, or its pod: never by a part of a name.
func TestMatch(t *testing.T) {
	runcBox := &Info{ID: "webapp", Name: "webapp", Runtime: "runc"}
	dock := &Info{ID: id, Name: "web", Runtime: "docker"}
	app := &Info{ID: "8" + id[1:], Runtime: "containerd", Pod: &event.Pod{Name: "api-1", Namespace: "shop", Container: "app"}}
	sandbox := &Info{ID: "7" + id[1:], Runtime: "containerd", Pod: &event.Pod{Name: "api-1", Namespace: "shop", Sandbox: true}}
	for _, c := range []struct {
		c    *Info
		ref  string
		want bool
	}{
		{runcBox, "webapp", true},
		{runcBox, "web", false},
		{runcBox, "weba", false},
		{&Info{ID: "cafe-db", Name: "cafe-db", Runtime: "runc"}, "cafe", false},
		{&Info{ID: "db1-backup", Name: "db1-backup", Runtime: "containerd"}, "db1", false},
		{dock, "web", true},
		{dock, id, true},
		{dock, id[:12], true},
		{dock, id[:3], true},
		{dock, id[:2], false},
		{dock, "3F2A8E", false},
		{dock, "3f2a8x", false},
		{app, "api-1", true},
		{app, "shop/api-1", true},
		{app, "api-1/app", true},
		{app, "other/api-1", false},
		{app, "api-1/(sandbox)", false},
		{sandbox, "api-1/(sandbox)", true},
		{sandbox, "api-1/app", false},
		{nil, "web", false},
		{dock, "", false},
	} {
		if got := Match(c.c, c.ref); got != c.want {
			t.Errorf("Match(%+v, %q) = %v, want %v", c.c, c.ref, got, c.want)
		}
	}
}

// A process a container moved into a cgroup of its own below the
// container's (systemd in a container) is that container's; one in a
// pod's cgroup, or in a host cgroup, is in none.
func TestRegistryCgroupBelowContainer(t *testing.T) {
	h := newFakeHost(t)
	run := filepath.Dir(h.roots.Runc[0])
	h.container(filepath.Join(run, "runc"), "mybox", "mybox", nil)
	k8sID := "8" + id[1:]
	h.container(filepath.Join(run, "containerd", "runc", "k8s.io"), k8sID,
		"kubepods/besteffort/pod"+pod+"/"+k8sID, map[string]string{
			"io.kubernetes.cri.sandbox-name": "api-1", "io.kubernetes.cri.sandbox-namespace": "shop",
			"io.kubernetes.cri.container-name": "app",
		})
	r := NewRegistry(h.roots, false)
	defer r.Close()
	below := func(path string) Cgroup {
		if err := os.MkdirAll(filepath.Join(h.roots.Cgroups.V2, path), 0o755); err != nil {
			t.Fatal(err)
		}
		return CgroupOfPath(h.roots.Cgroups.V2, "/"+path)
	}
	for path, want := range map[string]string{
		"mybox/init.scope":                                     "mybox",
		"mybox/system.slice/cron.service":                      "mybox",
		"kubepods/besteffort/pod" + pod + "/" + k8sID + "/sub": k8sID,
		"kubepods/besteffort/pod" + pod + "/other":             "",
		"user.slice/user-1000.slice/session-1.scope":           "",
		"a/b/c/d/e/f/g/h/mybox-not":                            "",
	} {
		c := r.Lookup(below(path))
		if want == "" && c != nil || want != "" && (c == nil || c.ID != want) {
			t.Errorf("%s: %+v, want %q", path, c, want)
		}
	}
	// A container made below another's: the one above answers until
	// its state is written, then it does, though first asked while new.
	inner := below("mybox/inner")
	if c := r.Lookup(inner); c == nil || c.ID != "mybox" {
		t.Errorf("below mybox, before its state: %+v", c)
	}
	h.container(filepath.Join(run, "runc"), "inner", "mybox/inner", nil)
	time.Sleep(askEvery + 10*time.Millisecond)
	if c := r.Lookup(inner); c == nil || c.ID != "inner" {
		t.Errorf("a container below mybox, its state written: %+v", c)
	}
	// Beyond the depth the kernel's filter looks, no more.
	if c := r.Lookup(below("mybox/1/2/3/4/5/6/7/8")); c != nil {
		t.Errorf("eight below the container: %+v", c)
	}
	if c := r.Lookup(below("mybox/1/2/3/4/5/6/7")); c == nil || c.ID != "mybox" {
		t.Errorf("seven below the container: %+v", c)
	}
}
