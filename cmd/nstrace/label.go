// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/nsflag"
	"github.com/nstrace/nstrace/internal/nsinfo"
)

// owners names whose namespace an inode is, the way `nstrace ns` does:
// a netns bind mount, a container, or the lowest pid in it. It indexes
// /proc at most once per ownersRescanEvery, when an inode is not known.
type owners struct {
	procRoot   string
	host       event.NS
	containers *container.Registry
	cache      map[uint64]string
	scanned    time.Time
}

const ownersRescanEvery = 250 * time.Millisecond

func newOwners(procRoot string, host event.NS, containers *container.Registry) *owners {
	return &owners{procRoot: procRoot, host: host, containers: containers, cache: map[uint64]string{}}
}

// of returns a short description of the namespace's owner, or "".
func (o *owners) of(t event.NSType, inode uint64) string {
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

// ownersIndex names the owner of every namespace on the host, from the
// same index `nstrace ns` lists: a bind mount that keeps it, else the
// lowest pid in it (or that process's container).
func ownersIndex(procRoot string, containers *container.Registry) map[uint64]string {
	procs := nsinfo.Procs(procRoot)
	index := map[uint64]string{}
	for _, n := range nsinfo.Namespaces(filepath.Join(procRoot, "self", "mountinfo"), procs) {
		switch {
		case len(n.Mounts) > 0:
			if name, ok := strings.CutPrefix(n.Mounts[0], "/run/netns/"); ok {
				index[n.Inode] = "netns " + name
			} else {
				index[n.Inode] = "mount " + n.Mounts[0]
			}
		case len(n.PIDs) > 0:
			p, _ := nsinfo.FindProc(procs, n.PIDs[0])
			if c := containers.Lookup(p.Cgroup, p.NS[event.NSPid]); c != nil {
				index[n.Inode] = "container " + c.Short()
			} else {
				index[n.Inode] = fmt.Sprintf("pid %d %s", p.PID, p.Comm)
			}
		}
	}
	return index
}

// nsTypeOfBit maps a CLONE_NEW* bit to its namespace type.
func nsTypeOfBit(bit uint64) (event.NSType, bool) {
	return event.ParseNSType(nsflag.TypeName(bit))
}
