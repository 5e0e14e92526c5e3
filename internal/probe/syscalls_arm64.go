// SPDX-License-Identifier: Apache-2.0

package probe

// Syscall numbers of the namespace calls on arm64 (the generic table).
var syscallNumbers = map[string]int64{
	"nst_nr_clone":   220,
	"nst_nr_clone3":  435,
	"nst_nr_unshare": 97,
	"nst_nr_setns":   268,
}
