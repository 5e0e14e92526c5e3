// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nstrace/nstrace/internal/testutil"
)

// runcBundle builds a busybox container bundle running args.
func runcBundle(t *testing.T, args ...string) string {
	t.Helper()
	for _, tool := range []string{"runc", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (apt-get install runc busybox-static)", tool)
		}
	}
	busybox, _ := exec.LookPath("busybox")
	dir := t.TempDir()
	bin := filepath.Join(dir, "rootfs", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", busybox, filepath.Join(bin, "busybox")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	for _, applet := range []string{"sh", "sleep", "true", "top"} {
		if err := os.Symlink("busybox", filepath.Join(bin, applet)); err != nil {
			t.Fatal(err)
		}
	}
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
	cmd := exec.Command("runc", args...)
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

func TestPrivilegedRuncContainer(t *testing.T) {
	testutil.RequirePrivileged(t)
	id := fmt.Sprintf("nstrace-test-%d", rand.IntN(1_000_000))
	marker := fmt.Sprintf("%d", rand.IntN(1_000_000))
	dir := runcBundle(t, "/bin/sh", "-c", "sleep 3600")
	f := startFeed(t, "--json", "-e", "exec")

	runc(t, dir, "run", "-d", id)
	t.Cleanup(func() {
		_ = exec.Command("runc", "kill", id, "KILL").Run()
		_ = exec.Command("runc", "delete", "-f", id).Run()
	})
	inContainer := func(l map[string]any) bool {
		c, ok := l["container"].(map[string]any)
		return ok && c["id"] == id && c["name"] == id && c["runtime"] == "runc"
	}
	init := f.next(t, func(l map[string]any) bool { return l["event"] == "exec" && args(l) == "/bin/sh -c sleep 3600" })
	if init["nspid"] != 1.0 || !inContainer(init) {
		t.Errorf("container init: nspid %v container %v", init["nspid"], init["container"])
	}
	// nstrace ns lists the container's pid namespace under the inode the
	// feed printed.
	feedPidNS := uint64(init["ns"].(map[string]any)["pid"].(float64))
	if r := row(nsJSON(t), "pid", feedPidNS); r == nil || r["container"].(map[string]any)["name"] != id {
		t.Errorf("nstrace ns has no pid namespace %d of container %s: %v", feedPidNS, id, r)
	}

	// A filtered feed started now sees runc exec in the container only.
	g := startFeed(t, "--json", "-e", "exec", "--container", id)
	runc(t, dir, "exec", id, "/bin/true", marker)
	if err := exec.Command("/bin/true", "host-"+marker).Run(); err != nil {
		t.Fatal(err)
	}
	ex := f.next(t, func(l map[string]any) bool { return l["event"] == "exec" && args(l) == "/bin/true "+marker })
	if !inContainer(ex) || ex["nspid"] == 1.0 {
		t.Errorf("runc exec process: container %v nspid %v", ex["container"], ex["nspid"])
	}
	if initNS, exNS := init["ns"].(map[string]any), ex["ns"].(map[string]any); initNS["pid"] != exNS["pid"] {
		t.Errorf("runc exec in pid ns %v, init in %v", exNS["pid"], initNS["pid"])
	}
	first := g.next(t, func(l map[string]any) bool { return l["event"] == "exec" })
	if args(first) != "/bin/true "+marker || !inContainer(first) {
		t.Errorf("--container %s feed starts with %v", id, first)
	}
	f.next(t, func(l map[string]any) bool { return args(l) == "/bin/true host-"+marker })
	_ = g.cmd.Process.Signal(os.Interrupt)
	for l := range g.lines {
		if !inContainer(l) {
			t.Errorf("--container feed shows %v", l)
		}
	}
}

// Twenty short-lived containers back to back: each init is attributed to
// its own container, none to another, though each is gone before its
// events are read.
func TestPrivilegedRuncChurnAttribution(t *testing.T) {
	testutil.RequirePrivileged(t)
	const n = 20
	marker := fmt.Sprintf("churn%d", rand.IntN(1_000_000))
	dir := runcBundle(t, "/bin/sh", "-c", "echo "+marker)
	f := startFeed(t, "--json", "-e", "exec")
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", marker, i)
		cmd := exec.Command("runc", "run", ids[i])
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("runc run %s: %v: %s", ids[i], err, out)
		}
	}
	seen := map[string]bool{}
	for len(seen) < n {
		l := f.next(t, func(l map[string]any) bool { return l["event"] == "exec" && args(l) == "/bin/sh -c echo "+marker })
		c, _ := l["container"].(map[string]any)
		if c == nil || c["runtime"] != "runc" || c["name"] != c["id"] || !strings.HasPrefix(fmt.Sprint(c["id"]), marker+"-") {
			t.Fatalf("init attributed to %v (cgroup %v %v)", c, l["cgroup"], l["cgroup_id"])
		}
		if seen[c["id"].(string)] {
			t.Errorf("two inits attributed to %s", c["id"])
		}
		seen[c["id"].(string)] = true
	}
}
