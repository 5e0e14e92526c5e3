// SPDX-License-Identifier: Apache-2.0

package probe

import (
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/event"
)

// syscallHooksArch reports whether the BPF programs know this
// architecture's syscall registers (bpf/headers/kernel.h's pt_regs
// flavours) and its setns wrapper.
func syscallHooksArch() bool { return runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64" }

// Syscall classes, from enum nst_syscall_class.
const (
	sysClone    = uint8(nstraceNstSyscallClassNST_SYS_CLONE)
	sysClone3   = uint8(nstraceNstSyscallClassNST_SYS_CLONE3)
	sysUnshare  = uint8(nstraceNstSyscallClassNST_SYS_UNSHARE)
	sysSetns    = uint8(nstraceNstSyscallClassNST_SYS_SETNS)
	sysExecve   = uint8(nstraceNstSyscallClassNST_SYS_EXECVE)
	sysExecveat = uint8(nstraceNstSyscallClassNST_SYS_EXECVEAT)
	sysCred     = uint8(nstraceNstSyscallClassNST_SYS_CRED)
	sysSetsid   = uint8(nstraceNstSyscallClassNST_SYS_SETSID)
	sysPtrace   = uint8(nstraceNstSyscallClassNST_SYS_PTRACE)
)

// sysTable is a syscall class by number: NST_SYSCALLS_MAX entries, as
// the programs' nst_sysclass arrays (Set checks the size).
type sysTable [512]uint8

// sysNumbers are a syscall table's numbers of the calls nstrace watches.
type sysNumbers struct {
	clone, clone3, unshare, setns, execve, execveat, setsid, ptrace int
	cred                                                            []int
}

// native is this architecture's own table, from x/sys.
var native = sysNumbers{
	clone: unix.SYS_CLONE, clone3: unix.SYS_CLONE3, unshare: unix.SYS_UNSHARE, setns: unix.SYS_SETNS,
	execve: unix.SYS_EXECVE, execveat: unix.SYS_EXECVEAT, setsid: unix.SYS_SETSID, ptrace: unix.SYS_PTRACE,
	cred: []int{unix.SYS_SETUID, unix.SYS_SETGID, unix.SYS_SETREUID, unix.SYS_SETREGID,
		unix.SYS_SETRESUID, unix.SYS_SETRESGID, unix.SYS_SETFSUID, unix.SYS_SETFSGID},
}

// compat is the 32-bit ABI's table: ia32 under x86_64, AArch32 under
// arm64. x/sys has no table for a foreign ABI, so these are written out
// (arch/x86/entry/syscalls/syscall_32.tbl, arch/arm/tools/syscall.tbl);
// the set*id family has its 16-bit and 32-bit calls in both.
var compat = map[string]sysNumbers{
	"amd64": {clone: 120, clone3: 435, unshare: 310, setns: 346, execve: 11, execveat: 358, setsid: 66, ptrace: 26,
		cred: []int{23, 46, 70, 71, 164, 170, 138, 139, 213, 214, 203, 204, 208, 210, 215, 216}},
	"arm64": {clone: 120, clone3: 435, unshare: 337, setns: 375, execve: 11, execveat: 387, setsid: 66, ptrace: 26,
		cred: []int{23, 46, 70, 71, 164, 170, 138, 139, 213, 214, 203, 204, 208, 210, 215, 216}},
}[runtime.GOARCH]

// classes builds a table of what each syscall number is, for the calls
// the options watch at the raw tracepoints: the others stay 0 and cost a
// syscall nothing but the first test.
func (n *sysNumbers) classes(opts Options, fentry bool) (t sysTable) {
	set := func(nr int, c uint8) {
		if nr > 0 && nr < len(t) {
			t[nr] = c
		}
	}
	k := opts.Kinds
	if !fentry {
		if k.Has(event.Clone) {
			set(n.clone, sysClone)
			set(n.clone3, sysClone3)
		}
		if k.Has(event.Unshare) {
			set(n.unshare, sysUnshare)
		}
		if k.Has(event.Setns) {
			set(n.setns, sysSetns)
		}
	}
	if opts.Failed {
		set(n.execve, sysExecve)
		set(n.execveat, sysExecveat)
	}
	if k.Has(event.UID) {
		for _, nr := range n.cred {
			set(nr, sysCred)
		}
	}
	if k.Has(event.SID) {
		set(n.setsid, sysSetsid)
	}
	if k.Has(event.Ptrace) {
		set(n.ptrace, sysPtrace)
	}
	return t
}

// watched is the programs' first test, a bit for each number that has a
// class in either table.
func watched(tables ...sysTable) (w [len(sysTable{}) / 64]uint64) {
	for _, t := range tables {
		for nr, c := range t {
			if c != 0 {
				w[nr/64] |= 1 << (nr % 64)
			}
		}
	}
	return w
}

// setSyscallClasses gives the programs both ABIs' tables.
func setSyscallClasses(v *nstraceVariableSpecs, opts Options, fentry bool) error {
	var c32 sysTable
	if compat.clone != 0 {
		c32 = compat.classes(opts, fentry)
	}
	c64 := native.classes(opts, fentry)
	return setAll([]varSetting{
		{v.NstSysclass, c64},
		{v.NstSysclass32, c32},
		{v.NstSyswatch, watched(c64, c32)},
	})
}
