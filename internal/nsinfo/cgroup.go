// SPDX-License-Identifier: Apache-2.0

package nsinfo

import (
	"encoding/binary"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Cgroup2Mount finds where the cgroup v2 hierarchy is mounted: usually
// /sys/fs/cgroup, /sys/fs/cgroup/unified on hybrid hosts. It reads a
// mountinfo file, normally /proc/self/mountinfo.
func Cgroup2Mount(mountinfo string) (string, bool) {
	b, err := os.ReadFile(mountinfo)
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint options [optional...] - fstype source super
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) >= 5 && len(g) >= 1 && g[0] == "cgroup2" && f[3] == "/" {
			return unescapeMount(f[4]), true
		}
	}
	return "", false
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

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
	p := c.lookup(id)
	if len(c.cache) >= cgroupCacheMax {
		clear(c.cache)
	}
	c.cache[id] = p
	return p
}

func (c *Cgroups) lookup(id uint64) string {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], id)
	fd, err := unix.OpenByHandleAt(c.fd, unix.NewFileHandle(fileidKernfs, b[:]), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	target, err := readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return ""
	}
	rel, ok := strings.CutPrefix(target, c.root)
	if !ok || (rel != "" && rel[0] != '/') {
		return ""
	}
	if rel == "" {
		return "/"
	}
	return rel
}

func readlink(path string) (string, error) {
	buf := make([]byte, 512)
	for {
		n, err := unix.Readlink(path, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

// Close releases the hierarchy.
func (c *Cgroups) Close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}
