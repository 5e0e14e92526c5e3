// SPDX-License-Identifier: Apache-2.0

// Package nsflag names the bits of clone(2), unshare(2) and setns(2) flags,
// and errno values, as nstrace shows them.
package nsflag

import (
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

type bit struct {
	mask uint64
	name string
}

// The namespace bits, named as /proc/PID/ns names them.
var nsBits = []bit{
	{unix.CLONE_NEWCGROUP, "cgroup"},
	{unix.CLONE_NEWIPC, "ipc"},
	{unix.CLONE_NEWNS, "mnt"},
	{unix.CLONE_NEWNET, "net"},
	{unix.CLONE_NEWPID, "pid"},
	{unix.CLONE_NEWTIME, "time"},
	{unix.CLONE_NEWUSER, "user"},
	{unix.CLONE_NEWUTS, "uts"},
}

// Other clone/unshare bits worth showing, in the kernel's names.
var otherBits = []bit{
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
}

// Clone names the bits of clone or unshare flags: namespace bits by their
// namespace type ("net", "pid"), the others by their constant name, and
// leftovers in hex.
func Clone(raw uint64) []string {
	var out []string
	rest := raw
	for _, b := range nsBits {
		if raw&b.mask != 0 {
			out = append(out, b.name)
			rest &^= b.mask
		}
	}
	for _, b := range otherBits {
		if raw&b.mask != 0 {
			out = append(out, b.name)
			rest &^= b.mask
		}
	}
	if rest != 0 {
		out = append(out, "0x"+strconv.FormatUint(rest, 16))
	}
	return out
}

// NSType names setns's nstype argument: "any" for 0 (the fd decides), the
// namespace types of its bits otherwise (several for a pidfd).
func NSType(raw uint64) []string {
	if raw == 0 {
		return []string{"any"}
	}
	return Clone(raw)
}

// TypeName names one CLONE_NEW* bit, as the type of a namespace.
func TypeName(bitv uint64) string {
	for _, b := range nsBits {
		if b.mask == bitv {
			return b.name
		}
	}
	if bitv == 0 {
		return "unknown"
	}
	return "0x" + strconv.FormatUint(bitv, 16)
}

// ParseNS reads a comma-separated list of namespace names into clone bits.
func ParseNS(list string) (uint64, bool) {
	var v uint64
	for _, n := range strings.Split(list, ",") {
		found := false
		for _, b := range nsBits {
			if b.name == n {
				v |= b.mask
				found = true
			}
		}
		if !found {
			return 0, false
		}
	}
	return v, true
}

// Errno names a negative return value: -1 is "EPERM".
func Errno(ret int64) string {
	if ret >= 0 {
		return ""
	}
	if name := unix.ErrnoName(unix.Errno(-ret)); name != "" {
		return name
	}
	return "E" + strconv.FormatInt(-ret, 10)
}
