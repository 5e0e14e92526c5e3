// SPDX-License-Identifier: Apache-2.0

package testutil

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/procfs"
)

// NetnsDir is where named network namespaces are kept: `ip netns add`'s,
// containerd's pods' (cni-…), Podman's.
const NetnsDir = "/run/netns"

// SharedNetnsDir makes NetnsDir a shared mount of its own, as the first
// `ip netns add` (and Podman) does on a host where it is not one yet.
// Until it is one, containerd mounts a pod's namespace on the root file
// system's directory; an `ip netns add` run meanwhile by another test
// binary then bind-mounts the directory onto itself, copying that mount
// into the bind and hiding the original beneath it: containerd unmounts
// the copy, and its rmdir of the pod's file fails (EBUSY) for the one
// left. Every test that makes a named network namespace, or starts what
// does, calls it first; a lock keeps two test binaries from mounting the
// directory twice.
func SharedNetnsDir(t testing.TB) {
	t.Helper()
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile("/run/nstrace-netns.lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	mounts, err := procfs.Mounts("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.Point == NetnsDir {
			return
		}
	}
	if err := unix.Mount(NetnsDir, NetnsDir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatalf("bind-mounting %s onto itself: %v", NetnsDir, err)
	}
	if err := unix.Mount("", NetnsDir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		t.Fatalf("making %s shared: %v", NetnsDir, err)
	}
}
