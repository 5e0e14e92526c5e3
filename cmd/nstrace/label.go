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

// ownersIndex names the owner of every namespace on the host: bind mounts
// first, then the lowest pid in it (or its container).
func ownersIndex(procRoot string, containers *container.Registry) map[uint64]string {
	index := map[uint64]string{}
	for _, m := range nsinfo.NSMounts(filepath.Join(procRoot, "self", "mountinfo")) {
		if name, ok := strings.CutPrefix(m.Path, "/run/netns/"); ok {
			index[m.Inode] = "netns " + name
		} else {
			index[m.Inode] = "mount " + m.Path
		}
	}
	for _, p := range nsinfo.Procs(procRoot) {
		owner := ""
		for _, ino := range p.NS {
			if ino == 0 || index[ino] != "" {
				continue
			}
			if owner == "" {
				if c := containers.Lookup(p.Cgroup, p.NS[event.NSPid]); c != nil {
					owner = "container " + c.Short()
				} else {
					owner = fmt.Sprintf("pid %d %s", p.PID, p.Comm)
				}
			}
			index[ino] = owner
		}
	}
	return index
}

// nsTypeOfBit maps a CLONE_NEW* bit to its namespace type.
func nsTypeOfBit(bit uint64) (event.NSType, bool) {
	for t := event.NSType(0); t < event.NSCount; t++ {
		if t == event.NSPidForChildren || t == event.NSTimeForChildren {
			continue
		}
		if nsflag.TypeName(bit) == t.String() {
			return t, true
		}
	}
	return 0, false
}
