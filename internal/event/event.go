// SPDX-License-Identifier: Apache-2.0

// Package event defines the Event every other part of nstrace speaks: one
// thing the kernel saw happen to a process, decorated with its namespaces.
package event

import (
	"fmt"
	"strings"
	"time"

	"github.com/nstrace/nstrace/internal/ns"
)

// Kind is what happened.
type Kind uint8

// The event kinds, in the order they are listed to users.
const (
	Fork Kind = iota + 1
	Exec
	Exit
	Clone
	Unshare
	Setns
	// Lost is a synthetic event: the kernel could not queue Count events.
	Lost
	Comm   // a task renamed itself or was renamed
	UID    // real or effective uid or gid changed
	SID    // setsid
	Ptrace // ptrace attach, seize, traceme, detach
	// Core and NonzeroExit select exits (that dumped core, that did not
	// end with status 0); their events are exits.
	Core
	NonzeroExit
	// KindCount is one more than the last kind: the size of a table by kind.
	KindCount
)

// LostReason says why the kernel could not deliver events.
type LostReason uint8

// The reasons, as the kernel side counts them.
const (
	// LostRingBuffer: the ring buffer was full.
	LostRingBuffer LostReason = iota
	// LostPending: too many unshare or setns calls were in flight at
	// once; the calls are not reported.
	LostPending
	// LostCloneFlags: too many namespace-creating clones were in flight
	// at once; their births are reported as forks, without flags.
	LostCloneFlags
	// LostTracked: the traced set was full; a child of a traced process
	// (ChildPID) and its descendants are not followed.
	LostTracked
	LostReasons
)

var lostNames = [LostReasons]string{"ring_buffer_full", "pending_full", "clone_flags_full", "traced_set_full"}

// String names the reason as the JSON view writes it.
func (r LostReason) String() string {
	if r < LostReasons {
		return lostNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

var kindNames = [...]string{
	Fork:        "fork",
	Exec:        "exec",
	Exit:        "exit",
	Clone:       "clone",
	Unshare:     "unshare",
	Setns:       "setns",
	Lost:        "lost",
	Comm:        "comm",
	UID:         "uid",
	SID:         "sid",
	Ptrace:      "ptrace",
	Core:        "core",
	NonzeroExit: "nonzeroexit",
}

// OnlySelects reports whether k only selects events of another kind:
// core and nonzeroexit pick exits.
func (k Kind) OnlySelects() bool { return k == Core || k == NonzeroExit }

// String returns the kind's name as users type it in -e.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Traced lists the kinds a user can select, in display order.
var Traced = []Kind{Fork, Exec, Exit, Clone, Unshare, Setns, Comm, UID, SID, Ptrace, Core, NonzeroExit}

// WantExit reports whether an exit event is selected by s: all exits,
// or those that dumped core, or those that did not end with status 0.
func (s KindSet) WantExit(e *Event) bool {
	return s.Has(Exit) || (s.Has(Core) && e.CoreDumped) || (s.Has(NonzeroExit) && (e.ExitCode != 0 || e.Signal != 0))
}

// NeedsExit reports whether s needs exit events at all.
func (s KindSet) NeedsExit() bool { return s.Has(Exit) || s.Has(Core) || s.Has(NonzeroExit) }

// KindSet is a set of kinds.
type KindSet uint32

// Has reports whether k is in the set.
func (s KindSet) Has(k Kind) bool { return s&(1<<k) != 0 }

// Add returns the set with k added.
func (s KindSet) Add(k Kind) KindSet { return s | 1<<k }

// Kinds returns the set of the given kinds.
func Kinds(ks ...Kind) KindSet {
	var s KindSet
	for _, k := range ks {
		s = s.Add(k)
	}
	return s
}

// AllKinds is every traced kind (-e all).
func AllKinds() KindSet { return Kinds(Traced...) }

// DefaultKinds are what nstrace shows without -e: births, execs, deaths
// and namespace changes. The others (comm, uid, sid, ptrace) are asked for
// by name or with all, since uid, sid and ptrace need system call hooks
// that the default does not pay for where fentry serves the rest.
func DefaultKinds() KindSet { return Kinds(Fork, Exec, Exit, Clone, Unshare, Setns) }

// ParseKinds reads a comma-separated list such as "exec,fork" or "all".
func ParseKinds(list string) (KindSet, error) {
	var s KindSet
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(strings.ToLower(name))
		if name == "" {
			continue
		}
		if name == "all" {
			s |= AllKinds()
			continue
		}
		found := false
		for _, k := range Traced {
			if k.String() == name {
				s = s.Add(k)
				found = true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown event %q (valid: %s, all)", name, kindList())
		}
	}
	if s == 0 {
		return 0, fmt.Errorf("no events selected (valid: %s, all)", kindList())
	}
	return s, nil
}

func kindList() string {
	names := make([]string, len(Traced))
	for i, k := range Traced {
		names[i] = k.String()
	}
	return strings.Join(names, ", ")
}

// Event is one thing that happened to a process.
//
// Byte-slice fields may point into a buffer the reader reuses: they are
// valid until the next event is read. Clone makes a lasting copy.
type Event struct {
	Kind Kind
	Time time.Time

	PID   uint32 // thread group id, host pid namespace
	TID   uint32 // thread id, host
	PPID  uint32 // parent's thread group id, host
	NSPID uint32 // thread group id in the process's own pid namespace
	UID   uint32
	GID   uint32
	Comm  []byte

	NS ns.Set
	// CgroupID is the process's cgroup: its cgroup v2 one, or where that
	// is the v2 root, its cgroup in the v1 hierarchy of the controller
	// CgroupV1 names ("" for v2). The id is the cgroup directory's inode
	// in its hierarchy; the two hierarchies' ids are different spaces.
	CgroupID uint64
	CgroupV1 string
	// CgroupName and CgroupParent are the kernfs names of the cgroup and
	// of its parent, as the kernel read them when it first saw the cgroup
	// (cgroup ids are never reused).
	CgroupName   string
	CgroupParent string
	Cgroup       string     // path in the cgroup's hierarchy, if known
	Container    *Container // nil outside containers

	// Compat: a 32-bit system call (unshare, setns).
	Compat bool

	// EUID and EGID are the effective ids (host user namespace).
	EUID, EGID uint32

	// exec (a failed one has Ret < 0)
	Filename          []byte
	FilenameTruncated bool
	Args              [][]byte
	ArgsTruncated     bool

	// fork, clone
	ChildPID   uint32
	ChildNSPID uint32
	ChildNS    ns.Set

	// exit
	ExitCode   int
	Signal     int
	CoreDumped bool
	Duration   time.Duration

	// clone, unshare: clone flags; setns: nstype
	FlagsRaw uint64
	// clone, unshare, setns: return value, 0 or -errno (clone: child pid)
	Ret int64

	// setns
	FD         int32
	TargetNS   uint64
	TargetType uint64 // CLONE_NEW* bit of the target namespace, 0 if unknown
	TargetPID  uint32 // process behind a pidfd
	// TargetOwner says whose namespace TargetNS is: "netns NAME",
	// "container NAME", "pid PID COMM", "host", or "" if unknown.
	TargetOwner string

	// setns, unshare: the caller's namespaces before the call
	PrevNS ns.Set

	// comm: the new name (Comm is the old one, the renamed thread's)
	CommNew []byte

	// uid: the ids before (UID, EUID, GID, EGID are after)
	OldUID, OldEUID, OldGID, OldEGID uint32

	// ptrace: FlagsRaw is the request, TargetPID the tracee, Ret the result

	// Ancestors are the process's parents, nearest first, when asked.
	Ancestors []Ancestor

	// lost: Count events for Reason; for LostTracked, ChildPID is the
	// process no longer followed and the identity fields its parent's.
	Count  uint64
	Reason LostReason
}

// Ancestor is one of a process's parents.
type Ancestor struct {
	PID   uint32 // host
	NSPID uint32 // in its own pid namespace
	PidNS uint64 // that namespace's inode
	Comm  []byte
}

// Container names the container a process runs in. ID and Runtime come
// from the kernel's name for the process's cgroup; the rest from the
// runtime's own records for that ID, which no other container ever has.
type Container struct {
	ID      string
	Name    string // the runtime's name for it: docker --name, runc's id ...
	Runtime string // who started it: docker, containerd, cri-o, podman, runc
	Image   string
	Pod     *Pod // Kubernetes, if any
}

// Pod is the Kubernetes pod a container belongs to.
type Pod struct {
	Name      string
	Namespace string
	UID       string
	Container string // the container's name in the pod spec
	// Sandbox marks the pod's sandbox (pause) container, which holds the
	// namespaces the pod's containers share; it has no Container name.
	Sandbox bool
}

// SandboxName is how the human view names a pod's sandbox after the pod:
// POD/(sandbox). No container can be called so (a name is a DNS label).
const SandboxName = "(sandbox)"

// Short is how the human view names the container: pod/container for
// Kubernetes (pod/(sandbox) for the pod's sandbox), else its name, else
// the first 12 characters of its id.
func (c *Container) Short() string {
	if p := c.Pod; p != nil && p.Name != "" && p.Sandbox {
		return p.Name + "/" + SandboxName
	}
	if p := c.Pod; p != nil && p.Name != "" && p.Container != "" {
		return p.Name + "/" + p.Container
	}
	if c.Name != "" {
		return c.Name
	}
	if len(c.ID) > 12 {
		return c.ID[:12]
	}
	return c.ID
}

// Clone returns a copy of e that shares no memory with the reader.
func (e *Event) Clone() *Event {
	c := *e
	c.Comm = append([]byte(nil), e.Comm...)
	c.Filename = append([]byte(nil), e.Filename...)
	c.CommNew = append([]byte(nil), e.CommNew...)
	if e.Ancestors != nil {
		c.Ancestors = make([]Ancestor, len(e.Ancestors))
		for i, a := range e.Ancestors {
			a.Comm = append([]byte(nil), a.Comm...)
			c.Ancestors[i] = a
		}
	}
	if e.Args != nil {
		c.Args = make([][]byte, len(e.Args))
		for i, a := range e.Args {
			c.Args[i] = append([]byte(nil), a...)
		}
	}
	return &c
}

// NewNS returns the namespace types in which a child (fork, clone) or the
// caller after the call (setns, unshare) differs from before. For other
// kinds it is empty.
func (e *Event) NewNS() ns.Mask {
	switch e.Kind {
	case Fork, Clone:
		return ns.Changed(&e.NS, &e.ChildNS)
	case Setns, Unshare:
		return ns.Changed(&e.PrevNS, &e.NS)
	}
	return 0
}
