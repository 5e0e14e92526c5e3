// SPDX-License-Identifier: Apache-2.0

package tracer

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/procfs"
)

// owners names whose namespace an inode is, the way `nstrace ns` does: a
// bind mount that keeps it, a container, or the lowest pid in it.
//
// The index comes from a scan of all of /proc, which takes milliseconds
// per hundred processes: it runs in the background, never two at a time
// and at most once per ownersRescanEvery, when asked for an inode it does
// not know or told that namespaces were made. The read loop never waits
// for it; an inode not yet indexed gets no label. Namespace inodes are
// reused once a namespace is gone, so a label is checked against the
// live namespace (its process's link, or its mount's inode) before it is
// given.
type owners struct {
	procRoot   string
	host       ns.Set
	containers *container.Registry
	cgroups    procfs.Hierarchies

	mu       sync.Mutex
	index    map[ownerKey]owner
	scanning bool
	again    bool // asked again while a scan ran or rested
	scanned  time.Time
}

type ownerKey struct {
	t     ns.Type
	inode uint64
}

// owner is a label and how to check it still holds.
type owner struct {
	label string
	pid   uint32 // a process in the namespace, or
	mount string // a bind mount of it
}

const ownersRescanEvery = 250 * time.Millisecond

func newOwners(procRoot string, host ns.Set, containers *container.Registry, cgroups procfs.Hierarchies) *owners {
	o := &owners{procRoot: procRoot, host: host, containers: containers, cgroups: cgroups, index: map[ownerKey]owner{}}
	o.rescan()
	return o
}

// of returns a short description of the namespace's owner, or "".
func (o *owners) of(t ns.Type, inode uint64) string {
	if inode == 0 {
		return ""
	}
	if o.host[t] == inode {
		return "host"
	}
	k := ownerKey{t, inode}
	o.mu.Lock()
	w, ok := o.index[k]
	o.mu.Unlock()
	if ok && o.holds(k, w) {
		return w.label
	}
	o.rescan()
	return ""
}

// changed says namespaces were made: the index should learn them.
func (o *owners) changed() { o.rescan() }

// holds checks that the namespace the label was made for is still the
// one with this inode.
func (o *owners) holds(k ownerKey, w owner) bool {
	if w.mount != "" {
		var st unix.Stat_t
		return unix.Stat(w.mount, &st) == nil && st.Ino == k.inode
	}
	target, err := os.Readlink(filepath.Join(o.procRoot, strconv.Itoa(int(w.pid)), "ns", k.t.String()))
	_, ino, ok := ns.ParseLink(target)
	return err == nil && ok && ino == k.inode
}

// rescan starts a background scan, unless one runs; one asked for too
// soon after the last runs when the rest is over.
func (o *owners) rescan() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.scanning {
		o.again = true
		return
	}
	o.scanning = true
	wait := ownersRescanEvery - time.Since(o.scanned)
	go func() {
		if wait > 0 {
			time.Sleep(wait)
		}
		index := o.scan()
		o.mu.Lock()
		o.index, o.scanned, o.scanning = index, time.Now(), false
		again := o.again
		o.again = false
		o.mu.Unlock()
		if again {
			o.rescan()
		}
	}()
}

// scan names the owner of every namespace on the host.
func (o *owners) scan() map[ownerKey]owner {
	procs := procfs.Procs(o.procRoot)
	containerOf := func(p procfs.Proc) string {
		if c := o.containers.LookupPath(o.cgroups.CgroupOf(p)); c != nil {
			return c.Short()
		}
		return ""
	}
	index := map[ownerKey]owner{}
	for _, n := range procfs.Namespaces(filepath.Join(o.procRoot, "self", "mountinfo"), procs) {
		label := n.Owner(procs, containerOf)
		if label == "" {
			continue
		}
		w := owner{label: label}
		if len(n.Mounts) > 0 {
			w.mount = n.Mounts[0]
		} else {
			w.pid = n.PIDs[0]
		}
		index[ownerKey{n.Type, n.Inode}] = w
	}
	return index
}
