// SPDX-License-Identifier: Apache-2.0

package procfs

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nstrace/nstrace/internal/ns"
)

// Mount is one line of a mountinfo file.
type Mount struct {
	ID, Parent int    // the mount's id and its parent's
	Root       string // the mounted object's path within its file system
	Point      string // where it is mounted
	FSType     string
	Options    string // the file system's own (super block) options
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
		m := Mount{Root: unescapeMount(f[3]), Point: unescapeMount(f[4]), FSType: g[0]}
		m.ID, _ = strconv.Atoi(f[0])
		m.Parent, _ = strconv.Atoi(f[1])
		if len(g) >= 3 {
			m.Options = g[2]
		}
		out = append(out, m)
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
	return hierarchyMount(ms, func(m Mount) bool { return m.FSType == "cgroup2" })
}

// hierarchyMount finds where the root of the cgroup hierarchy of the
// mounts that match is mounted: the host's, where a cgroup namespace
// shows both (Cgroup2Mount).
func hierarchyMount(ms []Mount, match func(Mount) bool) (string, bool) {
	point, found := "", false
	for _, m := range ms {
		if !match(m) {
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

// CgroupV1Controllers are the controllers whose cgroup v1 hierarchy can
// identify a process, the most telling first: every runtime puts a
// container in its own cgroup of each.
var CgroupV1Controllers = []string{"pids", "memory", "cpu", "cpuacct", "devices", "freezer", "blkio", "cpuset"}

// Hierarchies are the cgroup hierarchies that identify a process: v2's,
// and a v1 hierarchy that does where the process is in the v2 root.
type Hierarchies struct {
	V2 string // where the v2 hierarchy is mounted, "" if nowhere
	// V1 is where the v1 hierarchy of Controller is mounted, and ID that
	// hierarchy's id; "", "" and 0 where none is used.
	V1, Controller string
	ID             int
}

// FindHierarchies reads a mountinfo file, normally /proc/self/mountinfo,
// and the cgroup file beside it: the v2 hierarchy's mount
// (Cgroup2Mount), and the first of controllers mounted as a cgroup v1
// hierarchy whose root it shows and whose id the cgroup file gives
// (HierarchyID).
func FindHierarchies(mountinfo string, controllers []string) Hierarchies {
	ms, _ := Mounts(mountinfo)
	var h Hierarchies
	h.V2, _ = hierarchyMount(ms, func(m Mount) bool { return m.FSType == "cgroup2" })
	for _, c := range controllers {
		point, ok := hierarchyMount(ms, func(m Mount) bool { return m.FSType == "cgroup" && hasController(m.Options, c) })
		if !ok {
			continue
		}
		if id, ok := HierarchyID(filepath.Join(filepath.Dir(mountinfo), "cgroup"), c); ok {
			h.V1, h.Controller, h.ID = point, c, id
			break
		}
	}
	return h
}

// HierarchyID reads a /proc/PID/cgroup file for the id of the cgroup v1
// hierarchy controller is bound to (a line's first field,
// "ID:CONTROLLERS:PATH"). A hierarchy unmounted and mounted again gets
// another id, its cgroups other kernfs ids.
func HierarchyID(cgroupFile, controller string) (int, bool) {
	b, err := os.ReadFile(cgroupFile)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		id, rest, _ := strings.Cut(line, ":")
		ctrls, _, ok := strings.Cut(rest, ":")
		if n, err := strconv.Atoi(id); ok && err == nil && n > 0 && hasController(ctrls, controller) {
			return n, true
		}
	}
	return 0, false
}

// hasController reports whether a cgroup v1 mount's options ("rw,cpu,cpuacct")
// bind controller.
func hasController(options, controller string) bool {
	for _, o := range strings.Split(options, ",") {
		if o == controller {
			return true
		}
	}
	return false
}

// CgroupOf is p's cgroup as it identifies p: its v2 path, or where that
// is the root and h has a v1 hierarchy, its path there (v1 set).
func (h Hierarchies) CgroupOf(p Proc) (path string, v1 bool) {
	if p.Cgroup != "/" && p.Cgroup != "" || h.Controller == "" {
		return p.Cgroup, false
	}
	for _, line := range strings.Split(p.CgroupsV1, "\n") {
		// ID:CONTROLLERS:PATH
		_, rest, _ := strings.Cut(line, ":")
		ctrls, path, ok := strings.Cut(rest, ":")
		if ok && hasController(ctrls, h.Controller) {
			// In that hierarchy's root too: the v2 root, as the
			// kernel side says.
			return path, path != "/"
		}
	}
	return p.Cgroup, false
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
