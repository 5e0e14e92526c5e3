// SPDX-License-Identifier: Apache-2.0

package probe

// The BPF object is compiled for little-endian targets only; the programs
// are arch-neutral (BTF-typed hooks), so one object serves amd64 and arm64.
// Run through `make generate`, which pins the compiler and its flags.
//go:generate go tool bpf2go -target bpfel -type event -type nst_kind -type nst_ns -type nst_flag -type nst_lost_reason -type cgroup_event -type nst_syscall_class -type nst_v1_controller -type nst_cgroup_key -type ancestor nstrace ../../bpf/nstrace.bpf.c
