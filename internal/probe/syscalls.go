// SPDX-License-Identifier: Apache-2.0

package probe

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// syscallHooksArch reports whether the BPF programs know this
// architecture's syscall registers (bpf/headers/kernel.h's pt_regs
// flavours): the raw syscall tracepoints need them.
func syscallHooksArch() bool { return runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64" }

// setSyscallNumbers gives the programs this architecture's numbers of the
// namespace calls.
func setSyscallNumbers(v *nstraceVariableSpecs) error {
	return setAll([]varSetting{
		{v.NstNrClone, int64(unix.SYS_CLONE)},
		{v.NstNrClone3, int64(unix.SYS_CLONE3)},
		{v.NstNrUnshare, int64(unix.SYS_UNSHARE)},
		{v.NstNrSetns, int64(unix.SYS_SETNS)},
	})
}
