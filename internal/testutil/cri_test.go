// SPDX-License-Identifier: Apache-2.0

package testutil

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nstrace/nstrace/internal/procfs"
)

// A pod through CRI as a kubelet runs one: its sandbox and two
// containers share the network, ipc and uts namespaces and have pid
// namespaces of their own, in the pod's cgroup; ExecSync runs in one;
// a container's output is in its CRI log file; and nothing is left once
// the containerd is gone.
func TestPrivilegedCRIPod(t *testing.T) {
	RequirePrivileged(t)
	var c *CRI
	cfg := NewPod("web", "nstrace-test")
	cgroupParent := cfg.Linux.CgroupParent
	existed := map[string]bool{}
	for _, d := range cgroupParentsOf(cgroupParent) {
		_, err := os.Stat(d)
		existed[d] = err == nil
	}
	t.Run("pod", func(t *testing.T) {
		c = StartCRI(t)
		p := c.RunPod(t, cfg)
		a := p.Start(t, NewContainer("app", "sh", "-c", "echo hello from app; exec sleep 3600"))
		b := p.Start(t, NewContainer("sidecar", "sleep", "3600"))
		if out := c.ExecSync(t, a, "echo", "exec", "in", "app"); out != "exec in app" {
			t.Errorf("exec: %q", out)
		}

		ps := c.InspectPod(t, p.ID)
		if ps.Status.Metadata != cfg.Metadata || ps.Status.State != "SANDBOX_READY" {
			t.Errorf("inspectp: %+v, want %+v ready", ps.Status, cfg.Metadata)
		}
		if ip := net.ParseIP(ps.Status.Network.IP); ip == nil || !c.Subnet.Contains(ip) {
			t.Errorf("pod ip %q, not in %s", ps.Status.Network.IP, c.Subnet)
		}
		sandbox := strconv.Itoa(ps.Info.PID)
		for _, id := range []string{a, b} {
			s := c.Inspect(t, id)
			if s.Status.State != "CONTAINER_RUNNING" || s.Info.SandboxID != p.ID {
				t.Errorf("container %s: %+v", id, s)
			}
			pid := strconv.Itoa(s.Info.PID)
			for typ, shared := range map[string]bool{"net": true, "ipc": true, "uts": true, "pid": false, "mnt": false} {
				ours, theirs := nsLink(t, pid, typ), nsLink(t, sandbox, typ)
				if (ours == theirs) != shared {
					t.Errorf("%s: %s %s, the sandbox's %s", s.Status.Metadata.Name, typ, ours, theirs)
				}
			}
			cg, _ := os.ReadFile("/proc/" + pid + "/cgroup")
			if !strings.Contains(string(cg), "0::"+cgroupParent+"/"+id+"\n") {
				t.Errorf("%s's cgroups: %s", id, cg)
			}
		}
		// The pod's network namespace is held by a mount in NetnsDir's
		// own mount, where an `ip netns add` cannot bury it: one made now
		// leaves the pod to be removed as usual (Remove fails t if not).
		netns := nsLink(t, sandbox, "net")
		mounts, err := procfs.Mounts("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		var dir, held *procfs.Mount
		for i, m := range mounts {
			if m.Point == NetnsDir {
				dir = &mounts[i]
			}
			if m.Root == netns {
				held = &mounts[i]
			}
		}
		if dir == nil || held == nil || held.Parent != dir.ID || filepath.Dir(held.Point) != NetnsDir {
			t.Errorf("the pod's %s is mounted at %+v, %s at %+v", netns, held, NetnsDir, dir)
		}
		name := "nstrace-cri-" + strconv.Itoa(os.Getpid())
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns add: %v: %s", err, out)
		}
		defer exec.Command("ip", "netns", "del", name).Run()

		log, err := os.ReadFile(p.LogPath("app"))
		if f := strings.Fields(string(log)); err != nil || len(f) < 3 || f[1] != "stdout" || f[2] != "F" || !strings.Contains(string(log), " hello from app\n") {
			t.Errorf("app's log %s: %q %v", p.LogPath("app"), log, err)
		}
	})
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("%s left: %v", c.Dir, err)
	}
	if err := exec.Command("ip", "link", "show", c.Bridge).Run(); err == nil {
		t.Errorf("bridge %s left", c.Bridge)
	}
	for _, h := range cgroupHierarchies() {
		if _, err := os.Stat(filepath.Join(h, cgroupParent)); !os.IsNotExist(err) {
			t.Errorf("the pod's cgroup left in %s: %v", h, err)
		}
	}
	// The directories above it that the pod's run made are gone, unless
	// another test's CRI runs: then they may stay, recorded for it to
	// remove.
	withCgroupParents(t, func(made map[string]bool) {
		others := othersClaimed()
		for _, d := range cgroupParentsOf(cgroupParent) {
			if _, err := os.Stat(d); err == nil && !existed[d] && (!others || !made[d]) {
				t.Errorf("%s left, made for the pod (other CRIs running: %v)", d, others)
			}
		}
	})
	if _, err := os.Stat(filepath.Join(subnetClaims, c.Subnet.IP.String())); !os.IsNotExist(err) {
		t.Errorf("the claim on %s left: %v", c.Subnet, err)
	}
	if shims := shimsOf(c.Socket); len(shims) > 0 {
		t.Errorf("shims left: %v", shims)
	}
}

// othersClaimed reports whether another CRI holds a claim on a /24; a
// claim no CRI holds (its test was killed) is removed.
func othersClaimed() bool {
	files, _ := filepath.Glob(filepath.Join(subnetClaims, "*.*.*.*"))
	held := false
	for _, f := range files {
		if release, ok := claim(f); ok {
			release()
		} else {
			held = true
		}
	}
	return held
}

// A /24 claimed is another's only once released, and its file is gone
// then.
func TestClaim(t *testing.T) {
	path := filepath.Join(t.TempDir(), "10.213.7.0")
	release, ok := claim(path)
	if !ok {
		t.Fatal("no claim on a free /24")
	}
	if _, ok := claim(path); ok {
		t.Fatal("a /24 claimed twice")
	}
	release()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("released, the claim's file is left: %v", err)
	}
	again, ok := claim(path)
	if !ok {
		t.Fatal("no claim once released")
	}
	defer again()
}

func nsLink(t *testing.T, pid, typ string) string {
	t.Helper()
	l, err := os.Readlink("/proc/" + pid + "/ns/" + typ)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
