// SPDX-License-Identifier: Apache-2.0

package probe

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// syscallHooksArch reports whether the BPF programs know this
// architecture's syscall registers (bpf/headers/kernel.h's pt_regs
// flavours) and its setns wrapper.
func syscallHooksArch() bool { return runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64" }

// compatNumbers are the 32-bit ABI's numbers of clone, clone3, unshare and
// setns: ia32 under x86_64, AArch32 under arm64. x/sys has no table for a
// foreign ABI, so these four are written out (arch/x86/entry/syscalls/
// syscall_32.tbl, arch/arm/tools/syscall.tbl).
var compatNumbers = map[string][4]int64{
	"amd64": {120, 435, 310, 346},
	"arm64": {120, 435, 337, 375},
}[runtime.GOARCH]

// setSyscallNumbers gives the programs this architecture's numbers of the
// namespace calls, in both ABIs.
func setSyscallNumbers(v *nstraceVariableSpecs) error {
	settings := []varSetting{
		{v.NstNrClone, int64(unix.SYS_CLONE)},
		{v.NstNrClone3, int64(unix.SYS_CLONE3)},
		{v.NstNrUnshare, int64(unix.SYS_UNSHARE)},
		{v.NstNrSetns, int64(unix.SYS_SETNS)},
	}
	if c := compatNumbers; c != [4]int64{} {
		settings = append(settings,
			varSetting{v.NstNr32Clone, c[0]},
			varSetting{v.NstNr32Clone3, c[1]},
			varSetting{v.NstNr32Unshare, c[2]},
			varSetting{v.NstNr32Setns, c[3]})
	}
	return setAll(settings)
}
