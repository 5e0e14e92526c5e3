// SPDX-License-Identifier: Apache-2.0

package container

import (
	"os"
	"path/filepath"
	"testing"
)

const id = "3f2a8e8c1b7d4c5e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60"

func TestFromCgroupSamples(t *testing.T) {
	cases := []struct {
		path string
		want Info
	}{
		// Docker, systemd and cgroupfs drivers.
		{"/system.slice/docker-" + id + ".scope", Info{ID: id, Runtime: "docker"}},
		{"/docker/" + id, Info{ID: id, Runtime: "docker"}},
		// containerd CRI under Kubernetes, systemd driver.
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/cri-containerd-" + id + ".scope",
			Info{ID: id, Runtime: "containerd", PodUID: "0a1b2c3d-4e5f-6789-abcd-ef0123456789"}},
		// Kubernetes, cgroupfs driver.
		{"/kubepods/besteffort/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/" + id,
			Info{ID: id, Runtime: "kubernetes", PodUID: "0a1b2c3d-4e5f-6789-abcd-ef0123456789"}},
		{"/kubepods.slice/kubepods-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/crio-" + id + ".scope",
			Info{ID: id, Runtime: "cri-o", PodUID: "0a1b2c3d-4e5f-6789-abcd-ef0123456789"}},
		// CRI-O alone, Podman with systemd and cgroupfs.
		{"/machine.slice/crio-" + id + ".scope", Info{ID: id, Runtime: "cri-o"}},
		{"/machine.slice/libpod-" + id + ".scope", Info{ID: id, Runtime: "podman"}},
		{"/machine.slice/libpod-" + id + ".scope/container", Info{ID: id, Runtime: "podman"}},
		{"/libpod_parent/libpod-" + id, Info{ID: id, Runtime: "podman"}},
	}
	for _, c := range cases {
		got, ok := FromCgroup(c.path)
		if !ok || got != c.want {
			t.Errorf("%s:\n got %+v %v\nwant %+v", c.path, got, ok, c.want)
		}
	}
	for _, p := range []string{"/", "/user.slice/user-1000.slice/session-2.scope", "/system.slice/docker.service",
		"/machine.slice/libpod-conmon-" + id + ".scope", "/docker/notanid", "/init.scope"} {
		if got, ok := FromCgroup(p); ok {
			t.Errorf("%s: recognised as %+v", p, got)
		}
	}
}

func TestShort(t *testing.T) {
	if s := (&Info{ID: id}).Short(); s != id[:12] {
		t.Errorf("short id %s", s)
	}
	if s := (&Info{ID: "mybox", Name: "mybox"}).Short(); s != "mybox" {
		t.Errorf("named %s", s)
	}
}

func TestScanRuncAndFind(t *testing.T) {
	root := t.TempDir()
	runcRoot := filepath.Join(root, "runc")
	write := func(id, body string) {
		dir := filepath.Join(runcRoot, id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("mybox", `{"id":"mybox","init_process_pid":4242,"config":{}}`)
	write("broken", `{not json`)
	proc := filepath.Join(root, "proc")
	if err := os.MkdirAll(filepath.Join(proc, "4242", "ns"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("pid:[4026532397]", filepath.Join(proc, "4242", "ns", "pid")); err != nil {
		t.Fatal(err)
	}
	cs := ScanRunc(proc, []string{runcRoot})
	if len(cs) != 1 || cs[0].ID != "mybox" || cs[0].InitPID != 4242 || cs[0].PidNS != 4026532397 {
		t.Fatalf("scan: %+v", cs)
	}
	r := NewRegistry(proc, []string{runcRoot}, 4026531836)
	if c := r.Lookup("/", 4026532397); c == nil || c.Name != "mybox" || c.Runtime != "runc" {
		t.Errorf("lookup by pid ns: %+v", c)
	}
	if c := r.Lookup("/", 4026531836); c != nil {
		t.Errorf("host process in a container: %+v", c)
	}
	if c := r.Lookup("/docker/"+id, 4026531836); c == nil || c.ID != id {
		t.Errorf("lookup by cgroup: %+v", c)
	}
	pid, info, err := Find(proc, "", []string{runcRoot}, "myb")
	if err != nil || pid != 4242 || info.ID != "mybox" {
		t.Errorf("find by prefix: %d %+v %v", pid, info, err)
	}
	if _, _, err := Find(proc, "", []string{runcRoot}, "nope"); err == nil {
		t.Error("found a container that is not there")
	}
}
