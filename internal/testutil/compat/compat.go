// SPDX-License-Identifier: Apache-2.0

// Package compat makes 32-bit (compat) system calls from a 64-bit
// process, for the tests that check nstrace never mistakes one for a
// 64-bit call with the same number.
package compat

// Syscall makes the 32-bit system call nr with two arguments and returns
// the kernel's result (-errno on failure). ok is false where this
// architecture has no way to make one.
func Syscall(nr, a1, a2 uintptr) (r int64, ok bool) { return syscall32(nr, a1, a2) }
