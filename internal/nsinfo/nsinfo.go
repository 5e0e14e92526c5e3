// SPDX-License-Identifier: Apache-2.0

// Package nsinfo reads namespace inodes and cgroup paths from /proc and
// cgroupfs, the same numbers the kernel side of nstrace reports.
package nsinfo

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nstrace/nstrace/internal/event"
)

// ProcRoot is where procfs is mounted on a real host.
const ProcRoot = "/proc"

// ParseLink reads a namespace link target such as "net:[4026531840]".
func ParseLink(target string) (typ string, inode uint64, ok bool) {
	i := strings.Index(target, ":[")
	if i <= 0 || !strings.HasSuffix(target, "]") {
		return "", 0, false
	}
	n, err := strconv.ParseUint(target[i+2:len(target)-1], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return target[:i], n, true
}

// ReadNS returns the namespace inodes of process pid ("self" works too)
// under procRoot. A link that cannot be read (the process is gone, or the
// kernel refuses, as for PID 1 in some sandboxes) stays 0: unknown. The
// error reports only that none could be read.
func ReadNS(procRoot, pid string) (event.NS, error) {
	var ns event.NS
	var firstErr error
	read := 0
	for t := event.NSType(0); t < event.NSCount; t++ {
		target, err := os.Readlink(filepath.Join(procRoot, pid, "ns", t.String()))
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if _, ino, ok := ParseLink(target); ok {
			ns[t] = ino
			read++
		}
	}
	if read == 0 {
		if firstErr == nil {
			firstErr = fmt.Errorf("no namespace links under %s", filepath.Join(procRoot, pid, "ns"))
		}
		return ns, fmt.Errorf("reading namespaces of %s: %w", pid, firstErr)
	}
	return ns, nil
}

// NSpid returns the last field of the NSpid line of /proc/PID/status: the
// process's pid in its own pid namespace.
func NSpid(procRoot, pid string) (uint32, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, pid, "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			n, err := strconv.ParseUint(f[len(f)-1], 10, 32)
			return uint32(n), err
		}
	}
	return 0, fmt.Errorf("no NSpid line in %s/%s/status", procRoot, pid)
}
