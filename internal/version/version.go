// SPDX-License-Identifier: Apache-2.0

// Package version says which nstrace this is: the release, the source
// revision, the Go and cilium/ebpf it was built with, and the BPF object it
// embeds, so a fleet can tell which nstrace runs where.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version and Commit are set at build time (make build does):
// -ldflags "-X github.com/nstrace/nstrace/internal/version.Version=v1.2.3".
// Otherwise they come from the Go toolchain's build information.
var (
	Version = ""
	Commit  = ""
)

// Info is what --version prints and the metrics' build info carries.
type Info struct {
	Version   string // release, or the module version, or "devel"
	Commit    string // VCS revision, with "+dirty" for local changes
	Go        string
	Ebpf      string // github.com/cilium/ebpf's version
	BPFObject string // sha256 of the embedded BPF object
}

// Get gathers the build's information; object is the BPF object's hash.
func Get(object string) Info {
	i := Info{Version: Version, Commit: Commit, Go: runtime.Version(), BPFObject: object}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if i.Commit == "" {
					i.Commit = s.Value
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if dirty && i.Commit != "" && Commit == "" {
			i.Commit += "+dirty"
		}
		for _, d := range bi.Deps {
			if d.Path == "github.com/cilium/ebpf" {
				i.Ebpf = d.Version
			}
		}
	}
	if i.Version == "" {
		i.Version = "devel"
	}
	return i
}
