// SPDX-License-Identifier: Apache-2.0

// Package scope turns what the user asked to see (--pid, --ns,
// --container, --comm, --host) into the kernel's filter and the checks
// left to user space.
package scope

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/probe"
	"github.com/nstrace/nstrace/internal/procfs"
)

// MaxPID is the kernel's largest pid (PID_MAX_LIMIT on 64-bit). Namespace
// inodes are far above it, which tells pid:PID from pid:INODE.
const MaxPID = 1 << 22

// NSSpec is one --ns argument: an inode, or the namespaces of a process.
type NSSpec struct {
	Type    ns.Type // the type to match
	AnyType bool    // no type given
	Inode   uint64
	PID     uint32 // the namespaces of this process, instead of an inode
}

// ParseNSSpec reads INODE, TYPE:INODE, pid:PID or TYPE:pid:PID.
func ParseNSSpec(s string) (NSSpec, error) {
	spec := NSSpec{AnyType: true}
	parts := strings.Split(s, ":")
	num := func(v string) (uint64, error) {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 || n > 1<<32-1 {
			return 0, fmt.Errorf("%q: %q is not an inode or pid", s, v)
		}
		return n, nil
	}
	typ := func(v string) error {
		t, ok := ns.Parse(v)
		if !ok {
			return fmt.Errorf("%q: unknown namespace type %q (valid: %s)", s, v, ns.ListedNames)
		}
		spec.Type, spec.AnyType = t, false
		return nil
	}
	switch len(parts) {
	case 1:
		n, err := num(parts[0])
		spec.Inode = n
		return spec, err
	case 2:
		n, err := num(parts[1])
		if err != nil {
			return spec, err
		}
		if parts[0] == "pid" && n <= MaxPID {
			spec.PID = uint32(n)
			return spec, nil
		}
		spec.Inode = n
		return spec, typ(parts[0])
	case 3:
		if parts[1] != "pid" {
			return spec, fmt.Errorf("%q: want TYPE:pid:PID", s)
		}
		n, err := num(parts[2])
		if err != nil {
			return spec, err
		}
		if n > MaxPID {
			return spec, fmt.Errorf("%q: %d is not a process id", s, n)
		}
		spec.PID = uint32(n)
		return spec, typ(parts[0])
	}
	return spec, fmt.Errorf("%q: want INODE, TYPE:INODE, pid:PID or TYPE:pid:PID", s)
}

// ParsePIDs reads --pid's PID[,PID...] values.
func ParsePIDs(vals []string) ([]uint32, error) {
	var out []uint32
	for _, p := range vals {
		n, err := strconv.ParseUint(strings.TrimSpace(p), 10, 32)
		if err != nil || n == 0 || n > MaxPID {
			return nil, fmt.Errorf("%q is not a process id", p)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

// Scope is everything that narrows the feed.
type Scope struct {
	PIDs       []uint32
	Follow     bool
	Command    bool // a traced COMMAND: its tree only
	NS         []NSSpec
	Containers []string
	Comms      []string
	OnlyHost   bool
	NotHost    bool
	NSChanges  bool
}

// KernelFilter resolves the scope into what the kernel filters: the
// traced set, namespace references, and containers' cgroups. host is the
// host's namespaces.
func (s *Scope) KernelFilter(procRoot string, host ns.Set, containers *container.Registry) (probe.Filter, error) {
	var f probe.Filter
	if len(s.PIDs) > 0 {
		for _, pid := range s.PIDs {
			if _, ok := procfs.ReadProc(procRoot, pid); !ok {
				return f, fmt.Errorf("--pid %d: no such process", pid)
			}
		}
		f.Tracked, f.PIDs, f.Follow = true, s.PIDs, s.Follow
	}
	if s.Command {
		f.Tracked, f.Follow = true, true
	}
	refs := map[uint64]ns.Mask{}
	for _, spec := range s.NS {
		if spec.PID == 0 {
			m := ns.All
			if !spec.AnyType {
				m = ns.MaskOf(spec.Type)
			}
			refs[spec.Inode] |= m
			continue
		}
		set, err := procfs.ReadPIDNS(procRoot, spec.PID)
		if err != nil {
			return f, fmt.Errorf("--ns pid:%d: %w", spec.PID, err)
		}
		if !spec.AnyType {
			if set[spec.Type] == 0 {
				return f, fmt.Errorf("--ns %s:pid:%d: namespace unreadable", spec.Type, spec.PID)
			}
			refs[set[spec.Type]] |= ns.MaskOf(spec.Type)
			continue
		}
		// The process's own namespaces: those it does not share with the
		// host, or all of them for a host process.
		own := 0
		for t := ns.Type(0); t < ns.Count; t++ {
			if set[t] != 0 && set[t] != host[t] {
				refs[set[t]] |= ns.MaskOf(t)
				own++
			}
		}
		if own == 0 {
			for t := ns.Type(0); t < ns.Count; t++ {
				if set[t] != 0 {
					refs[set[t]] |= ns.MaskOf(t)
				}
			}
		}
	}
	if len(s.Containers) > 0 && containers != nil {
		// In the kernel by cgroup (a pod's, for a pod's containers), when
		// every container named runs now; a name given before its
		// container starts is matched in user space, on every event.
		var v2, v1 []uint64
		for _, ref := range s.Containers {
			found, err := containers.KernelCgroups(ref)
			if err != nil {
				return f, fmt.Errorf("--container: %w", err)
			}
			if len(found) == 0 {
				v2, v1 = nil, nil
				break
			}
			for _, cg := range found {
				if cg.V1 {
					v1 = append(v1, cg.ID)
				} else {
					v2 = append(v2, cg.ID)
				}
			}
		}
		f.Cgroups, f.CgroupsV1 = v2, v1
	}
	for ino, m := range refs {
		f.Namespaces = append(f.Namespaces, probe.NSRef{Inode: ino, Types: m})
	}
	return f, nil
}

// Follower keeps the kernel's cgroup filter, when KernelFilter set one
// for --container, up to date with the containers that come to answer
// to a reference later: a pod deleted and made again under its name (a
// StatefulSet's, with a new uid and cgroup), a container run again under
// its name. Its Learn is for container.Registry.OnContainer.
type Follower struct {
	refs   []string
	add    func(id uint64, v1 bool) error
	failed func(error)

	mu       sync.Mutex
	added    map[container.CgroupKey]bool
	stopped  bool
	reported bool
}

// CgroupFollower returns the Follower of the scope's --container
// references: add
// puts a cgroup in the kernel's filter (probe.Probe.FilterCgroup), and
// failed is told of its first error.
func (s *Scope) CgroupFollower(add func(id uint64, v1 bool) error, failed func(error)) *Follower {
	return &Follower{refs: s.Containers, add: add, failed: failed, added: map[container.CgroupKey]bool{}}
}

// Learn adds the cgroup the kernel filters on for c to its filter, if a
// reference names c.
func (f *Follower) Learn(c container.Info, cg container.CgroupKey) {
	ref := ""
	for _, r := range f.refs {
		if container.Match(&c, r) {
			ref = r
			break
		}
	}
	if ref == "" {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped || f.added[cg] {
		return
	}
	if err := f.add(cg.ID, cg.V1); err != nil {
		if !f.reported {
			f.reported = true
			f.failed(fmt.Errorf("--container %s: %s: %w", ref, c.Short(), err))
		}
		return
	}
	f.added[cg] = true
}

// Stop makes Learn do nothing from now on: once it returns, add is not
// called again.
func (f *Follower) Stop() {
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
}

// UserFilter is what the kernel does not filter: cheap checks on events
// already decoded.
type UserFilter struct {
	containers []string
	comms      []string
	host       ns.Set
	onlyHost   bool
	notHost    bool
	nsChanges  bool
}

// UserFilter returns the scope's checks left to user space.
func (s *Scope) UserFilter(host ns.Set) *UserFilter {
	return &UserFilter{containers: s.Containers, comms: s.Comms, host: host, onlyHost: s.OnlyHost, notHost: s.NotHost, nsChanges: s.NSChanges}
}

// Pass reports whether e is in scope; e's container must be decorated.
func (f *UserFilter) Pass(e *event.Event) bool {
	return f.PassUndecorated(e) && f.PassDecorated(e)
}

// PassDecorated runs the checks that need e's container.
func (f *UserFilter) PassDecorated(e *event.Event) bool {
	if len(f.containers) > 0 {
		for _, ref := range f.containers {
			if container.Match(e.Container, ref) {
				return true
			}
		}
		return false
	}
	return true
}

// PassUndecorated runs the checks that need nothing beyond what the
// kernel sent: they come first, so that events they drop cost no lookup.
func (f *UserFilter) PassUndecorated(e *event.Event) bool {
	if len(f.comms) > 0 {
		found := false
		for _, c := range f.comms {
			if string(e.Comm) == c {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if (f.onlyHost || f.notHost) && ns.Differs(&e.NS, &f.host) == f.onlyHost {
		return false
	}
	if f.nsChanges && e.NewNS() == 0 {
		return false
	}
	return true
}
