// SPDX-License-Identifier: Apache-2.0

package probe

import (
	"strings"

	"golang.org/x/sys/unix"
)

// Capability is one Linux capability nstrace needs, with why.
type Capability struct {
	Bit  uint
	Name string
	Why  string
}

// Required are the capabilities nstrace needs without root.
var Required = []Capability{
	{unix.CAP_BPF, "CAP_BPF", "load BPF programs and maps"},
	{unix.CAP_PERFMON, "CAP_PERFMON", "attach tracing programs and read kernel memory from them"},
}

// MissingCapabilities lists the required capabilities this process lacks
// in its effective set.
func MissingCapabilities() []string {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return []string{"(capabilities unreadable)"}
	}
	var out []string
	for _, c := range Required {
		if data[c.Bit/32].Effective&(1<<(c.Bit%32)) == 0 {
			out = append(out, c.Name)
		}
	}
	return out
}

func joinNames(names []string) string { return strings.Join(names, ", ") }
