// SPDX-License-Identifier: Apache-2.0

// Package procfs reads what /proc, mountinfo and cgroupfs say about
// processes and namespaces: the same numbers nstrace's kernel side
// reports, for decoration, filters and `nstrace ns`.
package procfs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/nstrace/nstrace/internal/ns"
)

// Root is where procfs is mounted on a real host.
const Root = "/proc"

// ReadNS returns the namespace inodes of process pid ("self" works too)
// under procRoot. A link that cannot be read (the process is gone, or the
// kernel refuses, as for PID 1 in some sandboxes) stays 0: unknown. The
// error reports only that none could be read.
func ReadNS(procRoot, pid string) (ns.Set, error) {
	return readNS(func(name string) (string, error) { return os.Readlink(filepath.Join(procRoot, pid, name)) },
		filepath.Join(procRoot, pid))
}

// readNS reads the namespace links through readlink, of a process's
// directory dir.
func readNS(readlink func(name string) (string, error), dir string) (ns.Set, error) {
	var set ns.Set
	var firstErr error
	read := 0
	for t := ns.Type(0); t < ns.Count; t++ {
		target, err := readlink("ns/" + t.String())
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if _, ino, ok := ns.ParseLink(target); ok {
			set[t] = ino
			read++
		}
	}
	if read == 0 {
		if firstErr == nil {
			firstErr = fmt.Errorf("no namespace links under %s", filepath.Join(dir, "ns"))
		}
		return set, fmt.Errorf("reading namespaces of %s: %w", filepath.Base(dir), firstErr)
	}
	return set, nil
}

// ReadPIDNS is ReadNS for a numeric pid.
func ReadPIDNS(procRoot string, pid uint32) (ns.Set, error) {
	return ReadNS(procRoot, strconv.FormatUint(uint64(pid), 10))
}
