// SPDX-License-Identifier: Apache-2.0

package tracer

import (
	"path/filepath"
	"time"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/procfs"
)

// owners names whose namespace an inode is, the way `nstrace ns` does:
// a netns bind mount, a container, or the lowest pid in it. It indexes
// /proc at most once per ownersRescanEvery, when an inode is not known.
type owners struct {
	procRoot   string
	host       ns.Set
	containers *container.Registry
	cache      map[uint64]string
	scanned    time.Time
}

const ownersRescanEvery = 250 * time.Millisecond

func newOwners(procRoot string, host ns.Set, containers *container.Registry) *owners {
	return &owners{procRoot: procRoot, host: host, containers: containers, cache: map[uint64]string{}}
}

// of returns a short description of the namespace's owner, or "".
func (o *owners) of(t ns.Type, inode uint64) string {
	if inode == 0 {
		return ""
	}
	if o.host[t] == inode {
		return "host"
	}
	if s, ok := o.cache[inode]; ok {
		return s
	}
	if time.Since(o.scanned) < ownersRescanEvery {
		return ""
	}
	o.scanned = time.Now()
	o.cache = ownersIndex(o.procRoot, o.containers)
	return o.cache[inode]
}

// ownersIndex names the owner of every namespace on the host.
func ownersIndex(procRoot string, containers *container.Registry) map[uint64]string {
	procs := procfs.Procs(procRoot)
	containerOf := func(p procfs.Proc) string {
		if c := containers.Lookup(p.Cgroup, p.NS[ns.Pid]); c != nil {
			return c.Short()
		}
		return ""
	}
	index := map[uint64]string{}
	for _, n := range procfs.Namespaces(filepath.Join(procRoot, "self", "mountinfo"), procs) {
		if o := n.Owner(procs, containerOf); o != "" {
			index[n.Inode] = o
		}
	}
	return index
}
