// SPDX-License-Identifier: Apache-2.0

//go:build !amd64

package compat

func syscall32(nr, a1, a2 uintptr) (int64, bool) { return 0, false }
