// SPDX-License-Identifier: Apache-2.0

package procfs

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"github.com/nstrace/nstrace/internal/ns"
)

// Mount is one line of a mountinfo file.
type Mount struct {
	Root   string // the mounted object's path within its file system
	Point  string // where it is mounted
	FSType string
}

// Mounts reads a mountinfo file (proc(5)):
// id parent major:minor root mountpoint options [optional...] - fstype source super.
func Mounts(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 1 {
			continue
		}
		out = append(out, Mount{Root: unescapeMount(f[3]), Point: unescapeMount(f[4]), FSType: g[0]})
	}
	return out, sc.Err()
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

// Cgroup2Mount finds where the root of the cgroup v2 hierarchy is
// mounted: usually /sys/fs/cgroup, /sys/fs/cgroup/unified on hybrid hosts.
// It reads a mountinfo file, normally /proc/self/mountinfo. In a cgroup
// namespace (a container's) the kernel shows mount roots relative to the
// namespace's root: the host's hierarchy, mounted in, shows as "/.." or
// "/../..", and "/" is only the namespace's own part; the host's wins.
func Cgroup2Mount(mountinfo string) (string, bool) {
	ms, _ := Mounts(mountinfo)
	point, found := "", false
	for _, m := range ms {
		if m.FSType != "cgroup2" {
			continue
		}
		if aboveNamespace(m.Root) {
			return m.Point, true
		}
		if m.Root == "/" && !found {
			point, found = m.Point, true
		}
	}
	return point, found
}

// aboveNamespace reports whether a cgroup mount's root, as a cgroup
// namespace shows it, is made of ".." only: the hierarchy's real root.
func aboveNamespace(root string) bool {
	rest := strings.TrimPrefix(root, "/")
	if rest == root || rest == "" {
		return false
	}
	for _, part := range strings.Split(rest, "/") {
		if part != ".." {
			return false
		}
	}
	return true
}

// NSMount is a namespace file bind-mounted somewhere.
type NSMount struct {
	Type  ns.Type
	Inode uint64
	Path  string
}

// NSMounts lists the nsfs bind mounts in a mountinfo file: the namespaces
// that `ip netns add` and `unshare --net=FILE` keep without a process.
func NSMounts(mountinfo string) []NSMount {
	ms, _ := Mounts(mountinfo)
	var out []NSMount
	seen := map[string]bool{}
	for _, m := range ms {
		if m.FSType != "nsfs" {
			continue
		}
		typ, ino, ok := ns.ParseLink(m.Root)
		t, known := ns.Parse(typ)
		if !ok || !known || seen[m.Point] {
			continue
		}
		seen[m.Point] = true
		out = append(out, NSMount{t, ino, m.Point})
	}
	return out
}
