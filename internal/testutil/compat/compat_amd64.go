// SPDX-License-Identifier: Apache-2.0

package compat

// int80 enters the kernel through int $0x80: the ia32 system call table,
// whatever the caller's mode (Linux with IA32 emulation).
func int80(nr, a1, a2 uintptr) uintptr

func syscall32(nr, a1, a2 uintptr) (int64, bool) {
	return int64(int32(int80(nr, a1, a2))), true
}
