// SPDX-License-Identifier: Apache-2.0

// Package container tells which container an event belongs to, without
// asking any daemon. The identity comes from the kernel: the id of the
// process's cgroup and the names of that cgroup and its parent, read at
// the event, which runtimes name after the container ("docker-<id>.scope",
// "/docker/<id>", "cri-containerd-<id>.scope", "libpod-<id>", a runc id).
// The container's name, image and pod come from the runtime's own files
// for that container id, which is never reused; a namespace inode or a
// pid, which are, never serves as an identity.
package container

import (
	"strings"

	"github.com/nstrace/nstrace/internal/event"
)

// Info names a container.
type Info = event.Container

// Cgroup is a cgroup as the kernel names it.
type Cgroup struct {
	ID     uint64 // the directory's inode in its hierarchy, never reused there
	V1     bool   // of the cgroup v1 hierarchy that identifies processes, not v2
	Name   string // kernfs name of the cgroup
	Parent string // kernfs name of its parent ("" for the root's children)
	Path   string // path in its hierarchy, as the caller knows it; "" if not
}

// CgroupKey is a cgroup's identity: its id, and which hierarchy's, the
// two hierarchies' ids being different spaces.
type CgroupKey struct {
	ID uint64
	V1 bool
}

// Key is cg's identity.
func (cg Cgroup) Key() CgroupKey { return CgroupKey{cg.ID, cg.V1} }

// scopes are the prefixes runtimes give a container's cgroup (systemd
// scopes, or plain directories with the cgroupfs driver) and who they
// mean.
var scopes = []struct{ prefix, runtime string }{
	{"docker-", "docker"},
	{"cri-containerd-", "containerd"},
	{"crio-", "cri-o"},
	{"libpod-", "podman"},
}

// isID reports whether s looks like a runtime's container id: 32 to 128
// lower-case hex digits.
func isID(s string) bool {
	if len(s) < 32 || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// scopeID reads "<prefix><id>[.scope]": the id and the runtime.
func scopeID(name string) (id, runtime string, ok bool) {
	name = strings.TrimSuffix(name, ".scope")
	for _, s := range scopes {
		if id, ok := strings.CutPrefix(name, s.prefix); ok && isID(id) {
			return id, s.runtime, true
		}
	}
	return "", "", false
}

// FromCgroup recognises a container from its cgroup's names alone: the
// runtimes' naming conventions. It gives the id and runtime, and the
// Kubernetes pod's uid when the parent is a pod's cgroup. A cgroup named
// otherwise (a runc container's cgroup is whatever its creator chose) is
// found through the runtime's state instead (Registry).
func FromCgroup(cg Cgroup) (Info, bool) {
	var c Info
	if uid, ok := podUID(cg.Parent); ok {
		c.Pod = &event.Pod{UID: uid}
	}
	switch id, rt, ok := scopeID(cg.Name); {
	case ok:
		c.ID, c.Runtime = id, rt
	case cg.Name == "container":
		// Podman with systemd nests its payload: libpod-<id>.scope/container.
		if id, rt, ok := scopeID(cg.Parent); ok {
			c.ID, c.Runtime = id, rt
		}
	case isID(cg.Name) && cg.Parent == "docker":
		c.ID, c.Runtime = cg.Name, "docker"
	case isID(cg.Name) && c.Pod != nil:
		// Kubernetes with the cgroupfs driver: /kubepods/<qos>/pod<uid>/<id>;
		// the runtime's state says whose.
		c.ID = cg.Name
	}
	if c.ID == "" {
		return Info{}, false
	}
	return c, true
}

// podUID reads "kubepods-burstable-pod<uid>.slice" or "pod<uid>".
func podUID(p string) (string, bool) {
	p = strings.TrimSuffix(p, ".slice")
	i := strings.LastIndex(p, "pod")
	if i < 0 || (i > 0 && p[i-1] != '-') || !strings.HasPrefix(p, "kubepods") && i != 0 {
		return "", false
	}
	uid := strings.ReplaceAll(p[i+3:], "_", "-")
	if len(uid) != 36 || strings.Count(uid, "-") != 4 {
		return "", false
	}
	return uid, true
}

// CgroupAt names the cgroup at a path in the v2 hierarchy, or with v1 in
// the v1 one (as /proc/PID/cgroup gives it: procfs.Hierarchies.CgroupOf).
func (r *Roots) CgroupAt(path string, v1 bool) Cgroup {
	if v1 {
		cg := CgroupOfPath(r.Cgroups.V1, path)
		cg.V1 = true
		return cg
	}
	return CgroupOfPath(r.Cgroups.V2, path)
}

// CgroupOfPath names the cgroup at a path in a hierarchy (as
// /proc/PID/cgroup gives it), with its id from root (the hierarchy's
// mount point); the id is 0 if the cgroup is gone.
func CgroupOfPath(root, path string) Cgroup {
	var cg Cgroup
	if path == "" || path == "/" {
		return cg
	}
	parts := strings.Split(strings.Trim(path, "/"), "/")
	cg.Name = parts[len(parts)-1]
	if len(parts) > 1 {
		cg.Parent = parts[len(parts)-2]
	}
	cg.ID = inode(root + path)
	cg.Path = path
	return cg
}
