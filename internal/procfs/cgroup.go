// SPDX-License-Identifier: Apache-2.0

package procfs

import (
	"encoding/binary"
	"errors"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// fileidKernfs is the file handle type of kernfs (cgroupfs) files, whose
// handle is the 64-bit cgroup id.
const fileidKernfs = 0xfe

// Cgroups turns cgroup v2 ids into paths relative to the hierarchy's root.
// It asks the kernel for each id once (open_by_handle_at) and remembers
// the answer.
type Cgroups struct {
	root  string
	fd    int
	cache map[uint64]string
}

const cgroupCacheMax = 8192

// NewCgroups opens the hierarchy at root ("" finds it). Without it (cgroup
// v1 only, or no permission) every path is empty.
func NewCgroups(root string) *Cgroups {
	if root == "" {
		root, _ = Cgroup2Mount("/proc/self/mountinfo")
	}
	c := &Cgroups{root: root, fd: -1, cache: map[uint64]string{}}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil {
		c.fd = fd
	}
	return c
}

// Path returns the cgroup's path, "/" for the root, or "" if unknown (for
// example a cgroup already removed).
func (c *Cgroups) Path(id uint64) string {
	if id == 0 || c.fd < 0 {
		return ""
	}
	if p, ok := c.cache[id]; ok {
		return p
	}
	p, final := c.lookup(id)
	if !final {
		return p
	}
	if len(c.cache) >= cgroupCacheMax {
		clear(c.cache)
	}
	c.cache[id] = p
	return p
}

// lookup asks the kernel; final is false for an answer that may change
// (the process is out of fds or memory), true otherwise: a path, a
// cgroup gone (ids are never reused), no permission.
func (c *Cgroups) lookup(id uint64) (path string, final bool) {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], id)
	fd, err := unix.OpenByHandleAt(c.fd, unix.NewFileHandle(fileidKernfs, b[:]), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return "", !transient(err)
	}
	defer unix.Close(fd)
	target, err := readlinkAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd))
	if err != nil {
		return "", !transient(err)
	}
	rel, ok := strings.CutPrefix(target, c.root)
	if !ok || (rel != "" && rel[0] != '/') {
		return "", true
	}
	if rel == "" {
		return "/", true
	}
	return rel, true
}

// transient reports whether err is a shortage that may pass.
func transient(err error) bool {
	return errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EINTR)
}

// readlinkAt reads the link at name, relative to the directory open at
// dir (unix.AT_FDCWD: the working directory's).
func readlinkAt(dir int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		b := make([]byte, size)
		n, err := unix.Readlinkat(dir, name, b)
		if err != nil {
			return "", &os.PathError{Op: "readlinkat", Path: name, Err: err}
		}
		if n < size {
			return string(b[:n]), nil
		}
	}
}

// Close releases the hierarchy.
func (c *Cgroups) Close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}
