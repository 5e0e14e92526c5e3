// SPDX-License-Identifier: Apache-2.0

package probe

import (
	"strings"

	"golang.org/x/sys/unix"
)

// Capability is one Linux capability nstrace uses, with why.
type Capability struct {
	Bit     uint
	Name    string
	Why     string
	Without string // what nstrace cannot tell without it, if it runs
}

// Required are the capabilities nstrace cannot trace without, root or not
// (a container's root has only the capabilities it was given).
var Required = []Capability{
	{unix.CAP_BPF, "CAP_BPF", "load BPF programs and maps", ""},
	{unix.CAP_PERFMON, "CAP_PERFMON", "attach tracing programs and read kernel memory from them", ""},
}

// Recommended are the capabilities without which nstrace traces but
// tells less.
var Recommended = []Capability{
	{unix.CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH", "open_by_handle_at turns cgroup ids into paths", "no cgroup paths"},
	{unix.CAP_SYS_PTRACE, "CAP_SYS_PTRACE", "read other processes' /proc/PID/ns", "no setns owners; --container, --ns pid:PID and nstrace ns miss processes it may not ptrace"},
}

// Memlock is required too where the kernel charges BPF memory to
// RLIMIT_MEMLOCK (before 5.11, memcg accounting): nstrace raises the limit.
var Memlock = Capability{unix.CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE", "raise the memlock limit, which kernels before 5.11 charge BPF memory to", ""}

// NeedsMemlock reports whether this kernel charges BPF memory to
// RLIMIT_MEMLOCK, so that Memlock is required.
func NeedsMemlock() bool {
	v, ok := parseRelease(kernelRelease())
	return ok && (v[0] < 5 || v[0] == 5 && v[1] < 11)
}

// RequiredHere are the capabilities required on this kernel: Required,
// and Memlock where NeedsMemlock.
func RequiredHere() []Capability {
	caps := append([]Capability{}, Required...)
	if NeedsMemlock() {
		caps = append(caps, Memlock)
	}
	return caps
}

// MissingCapabilities lists the capabilities required on this kernel
// that this process lacks in its effective set.
func MissingCapabilities() []string { return missing(RequiredHere(), false) }

// MissingRecommended lists the recommended capabilities this process
// lacks, each with what goes without it.
func MissingRecommended() []string { return missing(Recommended, true) }

func missing(caps []Capability, why bool) []string {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return []string{"(capabilities unreadable)"}
	}
	var out []string
	has := func(bit uint) bool { return data[bit/32].Effective&(1<<(bit%32)) != 0 }
	for _, c := range caps {
		// CAP_SYS_ADMIN does what CAP_BPF and CAP_PERFMON split off from
		// it in 5.8 (the kernel's bpf_capable, perfmon_capable): runtimes
		// that know no CAP_BPF (Debian 12's Docker 20.10) grant it instead.
		if (c.Bit == unix.CAP_BPF || c.Bit == unix.CAP_PERFMON) && has(unix.CAP_SYS_ADMIN) {
			continue
		}
		if !has(c.Bit) {
			name := c.Name
			if why {
				name += ": " + c.Without
			}
			out = append(out, name)
		}
	}
	return out
}

func joinNames(names []string) string { return strings.Join(names, ", ") }
