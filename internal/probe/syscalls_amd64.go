// SPDX-License-Identifier: Apache-2.0

package probe

// Syscall numbers of the namespace calls on x86_64 (64-bit ABI).
var syscallNumbers = map[string]int64{
	"nst_nr_clone":   56,
	"nst_nr_clone3":  435,
	"nst_nr_unshare": 272,
	"nst_nr_setns":   308,
}
