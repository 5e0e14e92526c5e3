// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nstrace/nstrace/internal/procfs"
	"github.com/nstrace/nstrace/internal/testutil"
)

// runcBundle builds a busybox container bundle running args.
func runcBundle(t *testing.T, args ...string) string {
	t.Helper()
	testutil.NeedTools(t, "runc", "busybox")
	dir := t.TempDir()
	testutil.BusyboxRootfs(t, dir)
	spec := exec.Command("runc", "spec")
	spec.Dir = dir
	if out, err := spec.CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v %s", err, out)
	}
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	proc := cfg["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = args
	b, _ = json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runc runs a runc command with no stdio: a detached container keeps
// whatever it is given open.
func runc(t *testing.T, dir string, args ...string) {
	t.Helper()
	runcUnder(t, dir, []string{"runc"}, args...)
}

// runcUnder is runc run by the command argv, which ends with runc's own
// name or runs runc with the arguments that follow it.
func runcUnder(t *testing.T, dir string, argv []string, args ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], append(argv[1:len(argv):len(argv)], args...)...)
	cmd.Dir = dir
	errs, err := os.CreateTemp("", "runc-stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(errs.Name())
	defer errs.Close()
	cmd.Stderr = errs
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(errs.Name())
		t.Fatalf("runc %v: %v: %s", args, err, msg)
	}
}

// A process runc's container moved into a cgroup of its own below the
// container's (as systemd in a container does) is still the
// container's: named in the feed, and shown by --container.
func TestPrivilegedContainerCgroupBelow(t *testing.T) {
	testutil.RequirePrivileged(t)
	mark := fmt.Sprint(rand.IntN(1_000_000))
	name := "nstrace-below-" + mark
	dir := runcBundle(t, "sh", "-c", "sleep 3600", mark)
	f := startFeed(t, "--json", "-e", "exec")
	t.Cleanup(func() {
		_ = exec.Command("runc", "kill", name, "KILL").Run()
		_ = exec.Command("runc", "delete", "-f", name).Run()
	})
	runc(t, dir, "run", "-d", name)
	init := f.next(t, execOf("sh -c sleep 3600 "+mark))
	if c := containerOf(init); c == nil || c["name"] != name {
		t.Fatalf("init: container %v, want %s", c, name)
	}
	// The container's cgroup, in the hierarchy that names it.
	h := procfs.FindHierarchies("/proc/self/mountinfo", nil)
	root := h.V2
	if ctrl, _ := init["cgroup_v1"].(string); ctrl != "" {
		root = procfs.FindHierarchies("/proc/self/mountinfo", []string{ctrl}).V1
	}
	cgroup, _ := init["cgroup"].(string)
	if root == "" || cgroup == "" || cgroup == "/" {
		t.Fatalf("init's cgroup %q (v1 %v), hierarchy %q", cgroup, init["cgroup_v1"], root)
	}
	sub := testutil.CgroupDir(t, root, filepath.Join(cgroup, "sub"))

	g := startFeed(t, "--json", "-e", "exec", "--container", name)
	pidFile := filepath.Join(t.TempDir(), "pid")
	runc(t, dir, "exec", "-d", "--pid-file", pidFile, name, "sh", "-c",
		"while [ ! -e /go ]; do sleep 0.05; done; exec /bin/true below-"+mark)
	pid, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sub, "cgroup.procs"), pid, 0o644); err != nil {
		t.Fatalf("moving %s into %s: %v", pid, sub, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rootfs", "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	want := func(l map[string]any) error {
		if c := containerOf(l); c == nil || c["name"] != name || c["runtime"] != "runc" {
			return fmt.Errorf("container %v, want %s", c, name)
		}
		if l["cgroup"] != cgroup+"/sub" {
			return fmt.Errorf("cgroup %v, want %s/sub", l["cgroup"], cgroup)
		}
		return nil
	}
	if err := want(f.next(t, execOf("/bin/true below-"+mark))); err != nil {
		t.Errorf("the feed: %v", err)
	}
	if err := want(g.next(t, execOf("/bin/true below-"+mark))); err != nil {
		t.Errorf("--container %s: %v", name, err)
	}
}
