// SPDX-License-Identifier: Apache-2.0

// Package ns is nstrace's one table of namespace types: their names as in
// /proc/PID/ns, their CLONE_NEW* bits, and the order in which the kernel
// record carries their inodes. Everything else derives from it.
package ns

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// Type indexes a namespace inode in a Set.
type Type uint8

// The namespace types, in /proc/PID/ns order: the same order as enum
// nst_ns in bpf/nstrace.h (a test in internal/probe holds them equal).
const (
	Cgroup Type = iota
	IPC
	Mnt
	Net
	Pid
	PidForChildren
	Time
	TimeForChildren
	User
	UTS
	Count
)

// table is the one list: link name under /proc/PID/ns and CLONE_NEW* bit.
var table = [Count]struct {
	name  string
	clone uint64
}{
	Cgroup:          {"cgroup", unix.CLONE_NEWCGROUP},
	IPC:             {"ipc", unix.CLONE_NEWIPC},
	Mnt:             {"mnt", unix.CLONE_NEWNS},
	Net:             {"net", unix.CLONE_NEWNET},
	Pid:             {"pid", unix.CLONE_NEWPID},
	PidForChildren:  {"pid_for_children", unix.CLONE_NEWPID},
	Time:            {"time", unix.CLONE_NEWTIME},
	TimeForChildren: {"time_for_children", unix.CLONE_NEWTIME},
	User:            {"user", unix.CLONE_NEWUSER},
	UTS:             {"uts", unix.CLONE_NEWUTS},
}

// String returns the type's name as in /proc/PID/ns.
func (t Type) String() string {
	if t < Count {
		return table[t].name
	}
	return "ns(" + strconv.Itoa(int(t)) + ")"
}

// CloneFlag returns the CLONE_NEW* bit of the type.
func (t Type) CloneFlag() uint64 {
	if t < Count {
		return table[t].clone
	}
	return 0
}

// Parse reads a type name ("net", "pid_for_children", ...).
func Parse(name string) (Type, bool) {
	for t := Type(0); t < Count; t++ {
		if table[t].name == name {
			return t, true
		}
	}
	return 0, false
}

// Listed are the types a process is in, as lsns lists them: the
// *_for_children links name namespaces its children will be in.
var Listed = []Type{Cgroup, IPC, Mnt, Net, Pid, Time, User, UTS}

// ListedNames is Listed's names, for messages.
const ListedNames = "cgroup, ipc, mnt, net, pid, time, user, uts"

// OfCloneFlag returns the type a single CLONE_NEW* bit creates: the
// namespace a process is in, never a *_for_children one.
func OfCloneFlag(bit uint64) (Type, bool) {
	for _, t := range Listed {
		if table[t].clone == bit {
			return t, true
		}
	}
	return 0, false
}

// CloneFlagName names one CLONE_NEW* bit as a namespace type: "net";
// "unknown" for 0, hex for anything else.
func CloneFlagName(bit uint64) string {
	if t, ok := OfCloneFlag(bit); ok {
		return t.String()
	}
	if bit == 0 {
		return "unknown"
	}
	return "0x" + strconv.FormatUint(bit, 16)
}

// Set holds a process's namespace inode for each type; 0 is unknown.
// Inodes are 32-bit in the kernel and widened here to meet stat(2).
type Set [Count]uint64

// Mask is a set of types.
type Mask uint16

// All is every type.
const All Mask = 1<<Count - 1

// MaskOf returns the mask of the given types.
func MaskOf(ts ...Type) Mask {
	var m Mask
	for _, t := range ts {
		m |= 1 << t
	}
	return m
}

// Has reports whether t is in m.
func (m Mask) Has(t Type) bool { return m&(1<<t) != 0 }

// Types lists m's types in order.
func (m Mask) Types() []Type {
	var out []Type
	for t := Type(0); t < Count; t++ {
		if m.Has(t) {
			out = append(out, t)
		}
	}
	return out
}

// Changed returns the types whose inode differs between before and
// after, where after is known.
func Changed(before, after *Set) Mask {
	var m Mask
	for t := Type(0); t < Count; t++ {
		if before[t] != after[t] && after[t] != 0 {
			m |= 1 << t
		}
	}
	return m
}

// Differs reports whether any namespace known in both sets differs.
func Differs(a, b *Set) bool {
	for t := Type(0); t < Count; t++ {
		if a[t] != 0 && b[t] != 0 && a[t] != b[t] {
			return true
		}
	}
	return false
}

// Flag is one named bit of clone(2) or unshare(2) flags.
type Flag struct {
	Mask uint64
	Name string
}

// CloneFlags names the bits of clone flags in the order nstrace shows
// them: the namespace bits by type ("net"), then the others by their
// kernel names. Leftover bits are shown in hex.
var CloneFlags = func() []Flag {
	var out []Flag
	for _, t := range Listed {
		out = append(out, Flag{table[t].clone, table[t].name})
	}
	return append(out, []Flag{
		{unix.CLONE_VM, "CLONE_VM"},
		{unix.CLONE_FS, "CLONE_FS"},
		{unix.CLONE_FILES, "CLONE_FILES"},
		{unix.CLONE_SIGHAND, "CLONE_SIGHAND"},
		{unix.CLONE_PIDFD, "CLONE_PIDFD"},
		{unix.CLONE_PTRACE, "CLONE_PTRACE"},
		{unix.CLONE_VFORK, "CLONE_VFORK"},
		{unix.CLONE_PARENT, "CLONE_PARENT"},
		{unix.CLONE_THREAD, "CLONE_THREAD"},
		{unix.CLONE_SYSVSEM, "CLONE_SYSVSEM"},
		{unix.CLONE_SETTLS, "CLONE_SETTLS"},
		{unix.CLONE_PARENT_SETTID, "CLONE_PARENT_SETTID"},
		{unix.CLONE_CHILD_CLEARTID, "CLONE_CHILD_CLEARTID"},
		{unix.CLONE_UNTRACED, "CLONE_UNTRACED"},
		{unix.CLONE_CHILD_SETTID, "CLONE_CHILD_SETTID"},
		{unix.CLONE_IO, "CLONE_IO"},
		{unix.CLONE_CLEAR_SIGHAND, "CLONE_CLEAR_SIGHAND"},
		{unix.CLONE_INTO_CGROUP, "CLONE_INTO_CGROUP"},
	}...)
}()

// AppendCloneFlags appends the names of raw's bits, each written by
// name (which quotes it or not), separated by sep; it allocates nothing.
func AppendCloneFlags(b []byte, raw uint64, sep string, name func([]byte, string) []byte) []byte {
	rest, first := raw, true
	for _, f := range CloneFlags {
		if raw&f.Mask == 0 {
			continue
		}
		if !first {
			b = append(b, sep...)
		}
		first = false
		b = name(b, f.Name)
		rest &^= f.Mask
	}
	if rest != 0 {
		if !first {
			b = append(b, sep...)
		}
		var hex [18]byte
		b = name(b, string(strconv.AppendUint(append(hex[:0], '0', 'x'), rest, 16)))
	}
	return b
}

// CloneFlagNames lists raw's bit names, as AppendCloneFlags writes them.
func CloneFlagNames(raw uint64) []string {
	var out []string
	AppendCloneFlags(nil, raw, "", func(b []byte, s string) []byte {
		out = append(out, s)
		return b
	})
	return out
}

// ParseLink reads a namespace link target such as "net:[4026531840]".
func ParseLink(target string) (typ string, inode uint64, ok bool) {
	i := -1
	for j := 0; j+1 < len(target); j++ {
		if target[j] == ':' && target[j+1] == '[' {
			i = j
			break
		}
	}
	if i <= 0 || target[len(target)-1] != ']' {
		return "", 0, false
	}
	n, err := strconv.ParseUint(target[i+2:len(target)-1], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return target[:i], n, true
}

// FormatLink writes the link target of an inode: "net:[4026531840]".
func FormatLink(t Type, inode uint64) string { return fmt.Sprintf("%s:[%d]", t, inode) }
