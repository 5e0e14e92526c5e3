// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/nsinfo"
	"github.com/nstrace/nstrace/internal/probe"
)

// maxPID is the kernel's largest pid (PID_MAX_LIMIT on 64-bit). Namespace
// inodes are far above it, which tells pid:PID from pid:INODE.
const maxPID = 1 << 22

// nsSpec is one --ns argument.
type nsSpec struct {
	typ   event.NSType // the type to match
	anyT  bool         // no type given
	inode uint64
	pid   uint32 // the namespaces of this process, instead of an inode
}

// parseNSSpec reads INODE, TYPE:INODE, pid:PID or TYPE:pid:PID.
func parseNSSpec(s string) (nsSpec, error) {
	spec := nsSpec{anyT: true}
	parts := strings.Split(s, ":")
	num := func(v string) (uint64, error) {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 || n > 1<<32-1 {
			return 0, fmt.Errorf("%q: %q is not an inode or pid", s, v)
		}
		return n, nil
	}
	typ := func(v string) error {
		t, ok := event.ParseNSType(v)
		if !ok {
			return fmt.Errorf("%q: unknown namespace type %q (valid: cgroup, ipc, mnt, net, pid, time, user, uts)", s, v)
		}
		spec.typ, spec.anyT = t, false
		return nil
	}
	switch len(parts) {
	case 1:
		n, err := num(parts[0])
		spec.inode = n
		return spec, err
	case 2:
		n, err := num(parts[1])
		if err != nil {
			return spec, err
		}
		if parts[0] == "pid" && n <= maxPID {
			spec.pid = uint32(n)
			return spec, nil
		}
		spec.inode = n
		return spec, typ(parts[0])
	case 3:
		if parts[1] != "pid" {
			return spec, fmt.Errorf("%q: want TYPE:pid:PID", s)
		}
		n, err := num(parts[2])
		if err != nil {
			return spec, err
		}
		if n > maxPID {
			return spec, fmt.Errorf("%q: %d is not a process id", s, n)
		}
		spec.pid = uint32(n)
		return spec, typ(parts[0])
	}
	return spec, fmt.Errorf("%q: want INODE, TYPE:INODE, pid:PID or TYPE:pid:PID", s)
}

// nsFilter turns the --ns and --container arguments into the kernel's
// namespace filter: inode to type mask.
func nsFilter(opts options, host event.NS) (map[uint32]uint32, error) {
	filter := map[uint32]uint32{}
	add := func(ino uint64, mask uint32) {
		filter[uint32(ino)] |= mask
	}
	for _, spec := range opts.ns {
		if spec.pid == 0 {
			mask := uint32(probe.AnyNSType)
			if !spec.anyT {
				mask = probe.NSTypeMask(spec.typ)
			}
			add(spec.inode, mask)
			continue
		}
		ns, err := nsinfo.ReadNS(nsinfo.ProcRoot, strconv.Itoa(int(spec.pid)))
		if err != nil {
			return nil, fmt.Errorf("--ns pid:%d: %w", spec.pid, err)
		}
		if !spec.anyT {
			if ns[spec.typ] == 0 {
				return nil, fmt.Errorf("--ns %s:pid:%d: namespace unreadable", spec.typ, spec.pid)
			}
			add(ns[spec.typ], probe.NSTypeMask(spec.typ))
			continue
		}
		// The process's own namespaces: those it does not share with the
		// host, or all of them for a host process.
		own := 0
		for t := event.NSType(0); t < event.NSCount; t++ {
			if ns[t] != 0 && ns[t] != host[t] {
				add(ns[t], probe.NSTypeMask(t))
				own++
			}
		}
		if own == 0 {
			for t := event.NSType(0); t < event.NSCount; t++ {
				if ns[t] != 0 {
					add(ns[t], probe.NSTypeMask(t))
				}
			}
		}
	}
	cgroupRoot := ""
	if len(opts.containers) > 0 {
		cgroupRoot, _ = nsinfo.Cgroup2Mount("/proc/self/mountinfo")
	}
	for _, ref := range opts.containers {
		pid, _, err := container.Find(nsinfo.ProcRoot, cgroupRoot, container.RuncRoots, ref)
		if err != nil {
			return nil, fmt.Errorf("--container: %w", err)
		}
		ns, err := nsinfo.ReadNS(nsinfo.ProcRoot, strconv.Itoa(int(pid)))
		if err != nil {
			return nil, fmt.Errorf("--container %s: %w", ref, err)
		}
		// A container is its pid namespace; one sharing the host's is
		// told by its mount namespace.
		t := event.NSPid
		if ns[t] == host[t] {
			t = event.NSMnt
		}
		add(ns[t], probe.NSTypeMask(t))
	}
	return filter, nil
}

// userFilter is what the kernel does not filter: cheap checks on events
// already decoded.
type userFilter struct {
	comms     []string
	host      event.NS
	onlyHost  bool
	notHost   bool
	nsChanges bool
}

func (f *userFilter) pass(e *event.Event) bool {
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
	if f.onlyHost || f.notHost {
		inHost := true
		for t := event.NSType(0); t < event.NSCount; t++ {
			if e.NS[t] != 0 && f.host[t] != 0 && e.NS[t] != f.host[t] {
				inHost = false
				break
			}
		}
		if inHost != f.onlyHost {
			return false
		}
	}
	if f.nsChanges && len(e.NewNS()) == 0 {
		return false
	}
	return true
}
