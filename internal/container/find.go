// SPDX-License-Identifier: Apache-2.0

package container

import (
	"fmt"
	"sort"
	"strings"

	"github.com/nstrace/nstrace/internal/event"
)

// Match reports whether ref names c: its id, its name, a prefix of at
// least 3 hex digits of an id a runtime made (Docker's, CRI's, Podman's:
// 32 hex digits or more), or for Kubernetes its pod (POD,
// NAMESPACE/POD) or POD/CONTAINER (POD/(sandbox) for the pod's
// sandbox). A runc or ctr id is the name its user gave, and a name is
// whole: --container web is never webapp, nor --container cafe cafe-db.
func Match(c *Info, ref string) bool {
	if c == nil || ref == "" {
		return false
	}
	if c.ID == ref || c.Name == ref || (len(ref) >= 3 && isID(c.ID) && strings.HasPrefix(c.ID, ref)) {
		return true
	}
	if p := c.Pod; p != nil && p.Name != "" {
		return ref == p.Name || ref == p.Namespace+"/"+p.Name ||
			p.Container != "" && ref == p.Name+"/"+p.Container || p.Sandbox && ref == p.Name+"/"+event.SandboxName
	}
	return false
}

// Find lists the running containers ref names, by cgroup. None is no
// error: the container may not have started yet. Two different
// containers for one name are, and so are pods of one name (POD) in two
// namespaces: the error names them NAMESPACE/POD.
func (r *Registry) Find(ref string) (map[CgroupKey]Info, error) {
	found := map[CgroupKey]Info{}
	ids, pods := map[string]bool{}, map[string]bool{}
	for cg, c := range r.Containers() {
		if Match(&c, ref) {
			found[cg] = c
			ids[c.ID] = true
			if c.Pod != nil {
				pods[c.Pod.Namespace+"/"+c.Pod.Name] = true
			}
		}
	}
	switch {
	case len(ids) > 1 && !isPodRef(found, ref):
		return nil, fmt.Errorf("container %q is ambiguous: %s", ref, sorted(ids))
	case len(pods) > 1 && !strings.Contains(ref, "/"):
		return nil, fmt.Errorf("container %q is ambiguous: pods %s", ref, sorted(pods))
	}
	return found, nil
}

// sorted lists a set's members, sorted, with commas.
func sorted(set map[string]bool) string {
	list := make([]string, 0, len(set))
	for s := range set {
		list = append(list, s)
	}
	sort.Strings(list)
	return strings.Join(list, ", ")
}

// isPodRef: a pod's name stands for all its containers.
func isPodRef(found map[CgroupKey]Info, ref string) bool {
	for _, c := range found {
		if c.Pod == nil || (ref != c.Pod.Name && ref != c.Pod.Namespace+"/"+c.Pod.Name) {
			return false
		}
	}
	return true
}

// KernelCgroups lists the cgroups the kernel is to filter on for ref,
// with their descendants: those of the running containers ref names, but
// for a pod's container its pod's cgroup, where the containers the pod
// starts later (and restarts) go too; user space checks ref on every
// event. None is no error: the container may not have started yet.
func (r *Registry) KernelCgroups(ref string) ([]CgroupKey, error) {
	found, err := r.Find(ref)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	set := map[CgroupKey]bool{}
	for cg := range found {
		set[r.kernelCgroupLocked(cg)] = true
	}
	keys := make([]CgroupKey, 0, len(set))
	for cg := range set {
		keys = append(keys, cg)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].V1 != keys[j].V1 {
			return !keys[i].V1
		}
		return keys[i].ID < keys[j].ID
	})
	return keys, nil
}
