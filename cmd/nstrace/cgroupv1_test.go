// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/nstrace/nstrace/internal/procfs"
	"github.com/nstrace/nstrace/internal/testutil"
)

// runc's container test where runc sees cgroup v1 alone, as on a host
// without cgroup v2 or one whose runtime is set up for v1 only: runc runs
// in a mount namespace where every cgroup v2 mount is covered, so its
// containers stay in the v2 root and only their v1 cgroups name them.
// The v1 hierarchies are the host's, or ones the test mounts (pids, and
// devices, which runc needs on v1).
func TestPrivilegedContainerCgroupV1(t *testing.T) {
	testutil.RequirePrivileged(t)
	testutil.NeedTools(t, "runc", "unshare")
	h := testutil.CgroupV1(t)
	if procfs.FindHierarchies("/proc/self/mountinfo", []string{"devices"}).Controller == "" {
		if _, err := testutil.MountCgroupV1(t, "devices"); err != nil {
			t.Fatalf("mounting the devices controller's cgroup v1 hierarchy: %v", err)
		}
	}
	argv := runcWithoutCgroup2(t)
	testRuntime(t, engine{
		runtime:  "runc",
		cgroupV1: h.Controller,
		setup:    func(t *testing.T) string { return "" },
		run: func(t *testing.T, _, name string, _ []string, args ...string) string {
			runcUnder(t, runcBundle(t, args...), argv, "run", "-d", name)
			return name
		},
		exec: func(t *testing.T, name string, args ...string) {
			runcUnder(t, "", argv, append([]string{"exec", name}, args...)...)
		},
		remove: func(name string) {
			_ = exec.Command(argv[0], append(argv[1:len(argv):len(argv)], "kill", name, "KILL")...).Run()
			_ = exec.Command(argv[0], append(argv[1:len(argv):len(argv)], "delete", "-f", name)...).Run()
		},
	})
}

// runcWithoutCgroup2 is a command that runs runc in the cgroup v2 root
// (where a container of runc on v1 stays; the test may run in a v2
// cgroup of its own, a systemd session's or service's), in a mount
// namespace of its own with a tmpfs over each cgroup v2 mount, deepest
// first.
func runcWithoutCgroup2(t *testing.T) []string {
	t.Helper()
	ms, err := procfs.Mounts("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var points []string
	for _, m := range ms {
		if m.FSType == "cgroup2" {
			points = append(points, m.Point)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var script strings.Builder
	if v2 := procfs.FindHierarchies("/proc/self/mountinfo", nil).V2; v2 != "" {
		fmt.Fprintf(&script, "echo $$ >'%s/cgroup.procs' && ", v2)
	}
	for _, p := range points {
		fmt.Fprintf(&script, "mount -t tmpfs nstrace-no-cgroup2 '%s' && ", p)
	}
	script.WriteString(`exec runc "$@"`)
	return []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script.String(), "sh"}
}
