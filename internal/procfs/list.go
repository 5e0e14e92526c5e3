// SPDX-License-Identifier: Apache-2.0

package procfs

import (
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/ns"
)

// Proc is what /proc says about one process.
type Proc struct {
	PID, PPID, NSPID uint32
	UID              uint32 // real uid, as the reader's user namespace sees it
	Comm             string
	Cgroup           string // cgroup v2 path
	// CgroupsV1 are the cgroup v1 lines of /proc/PID/cgroup
	// ("ID:CONTROLLERS:PATH"), one a line (Hierarchies.CgroupOf).
	CgroupsV1 string
	NS        ns.Set
	// Readable is false when none of the namespace links could be read
	// (the process went away, or the kernel refused, as for PID 1 in
	// some sandboxes).
	Readable bool
}

// ReadProc reads one process. ok is false if it is gone. Every file is
// read through one open directory of the process: a pid that another
// process takes meanwhile makes the reads fail, never mixes the two.
func ReadProc(procRoot string, pid uint32) (Proc, bool) {
	p := Proc{PID: pid}
	dir := filepath.Join(procRoot, strconv.Itoa(int(pid)))
	d, err := os.Open(dir)
	if err != nil {
		return p, false
	}
	defer d.Close()
	at := procDir{int(d.Fd())}
	status, err := at.readFile("status")
	if err != nil {
		return p, false
	}
	for _, line := range strings.Split(string(status), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "Name":
			p.Comm = val
		case "Uid":
			if f := strings.Fields(val); len(f) > 0 {
				n, _ := strconv.ParseUint(f[0], 10, 32)
				p.UID = uint32(n)
			}
		case "PPid":
			n, _ := strconv.ParseUint(val, 10, 32)
			p.PPID = uint32(n)
		case "NSpid":
			if f := strings.Fields(val); len(f) > 0 {
				n, _ := strconv.ParseUint(f[len(f)-1], 10, 32)
				p.NSPID = uint32(n)
			}
		}
	}
	set, err := readNS(at.readlink, dir)
	p.NS, p.Readable = set, err == nil
	if b, err := at.readFile("cgroup"); err == nil {
		var v1 []string
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "0::"); ok {
				p.Cgroup = rest
			} else if line != "" {
				v1 = append(v1, line)
			}
		}
		p.CgroupsV1 = strings.Join(v1, "\n")
	}
	return p, true
}

// procDir reads a process's files relative to its open directory.
type procDir struct{ fd int }

func (d procDir) readFile(name string) ([]byte, error) {
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "openat", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	return io.ReadAll(f)
}

func (d procDir) readlink(name string) (string, error) { return readlinkAt(d.fd, name) }

// Procs reads every process under procRoot, in pid order.
func Procs(procRoot string) []Proc {
	entries, _ := os.ReadDir(procRoot)
	var out []Proc
	for _, e := range entries {
		pid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil {
			continue
		}
		if p, ok := ReadProc(procRoot, uint32(pid)); ok {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// FindProc finds pid in procs, which are in pid order (as Procs returns).
func FindProc(procs []Proc, pid uint32) (Proc, bool) {
	i, found := sort.Find(len(procs), func(i int) int { return int(pid) - int(procs[i].PID) })
	if !found {
		return Proc{}, false
	}
	return procs[i], true
}

// Namespace is one namespace and who keeps it alive.
type Namespace struct {
	Type  ns.Type
	Inode uint64
	PIDs  []uint32 // processes in it, in order
	// Mounts are bind mounts of it (ip netns add), FDs processes holding
	// it open ("PID/FD").
	Mounts []string
	FDs    []string
}

type nsKey struct {
	typ   ns.Type
	inode uint64
}

// nsIndex gathers namespaces by type and inode.
type nsIndex map[nsKey]*Namespace

func (x nsIndex) get(t ns.Type, ino uint64) *Namespace {
	k := nsKey{t, ino}
	n := x[k]
	if n == nil {
		n = &Namespace{Type: t, Inode: ino}
		x[k] = n
	}
	return n
}

// processesAndMounts indexes the namespaces processes are in and those
// bind mounts (mountinfo) keep.
func processesAndMounts(mountinfo string, procs []Proc) nsIndex {
	x := nsIndex{}
	for _, p := range procs {
		for _, t := range ns.Listed {
			if ino := p.NS[t]; ino != 0 {
				n := x.get(t, ino)
				n.PIDs = append(n.PIDs, p.PID)
			}
		}
	}
	for _, m := range NSMounts(mountinfo) {
		n := x.get(m.Type, m.Inode)
		n.Mounts = append(n.Mounts, m.Path)
	}
	return x
}

// sorted lists the index by type and inode.
func (x nsIndex) sorted() []Namespace {
	out := make([]Namespace, 0, len(x))
	for _, n := range x {
		out = append(out, *n)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Type != out[j].Type {
			return out[i].Type < out[j].Type
		}
		return out[i].Inode < out[j].Inode
	})
	return out
}

// Namespaces lists every namespace that a process is in, or that a bind
// mount (mountinfo) keeps alive, sorted by type and inode.
func Namespaces(mountinfo string, procs []Proc) []Namespace {
	return processesAndMounts(mountinfo, procs).sorted()
}

// NamespacesHeldOpen is Namespaces and also the namespaces processes hold
// open by fd. It reads every fd of every process, so the listing uses it
// and the tracer does not.
func NamespacesHeldOpen(procRoot, mountinfo string, procs []Proc) []Namespace {
	x := processesAndMounts(mountinfo, procs)
	for _, p := range procs {
		fdDir := filepath.Join(procRoot, strconv.Itoa(int(p.PID)), "fd")
		fds, _ := os.ReadDir(fdDir)
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			// An fd on pid_for_children reads "pid:[...]" too.
			typ, ino, ok := ns.ParseLink(target)
			t, known := ns.Parse(typ)
			if !ok || !known {
				continue
			}
			n := x.get(t, ino)
			n.FDs = append(n.FDs, strconv.Itoa(int(p.PID))+"/"+fd.Name())
		}
	}
	return x.sorted()
}

// Owner says whose namespace n is, the way both `nstrace ns` and the
// feed's setns targets name it: a bind mount that keeps it ("netns NAME"
// for ip netns, else "mount PATH"), else the lowest process in it, named
// by its container (containerOf returns "" outside one) or "pid PID COMM".
// It returns "" when nothing keeps it.
func (n *Namespace) Owner(procs []Proc, containerOf func(Proc) string) string {
	switch {
	case len(n.Mounts) > 0:
		if name, ok := strings.CutPrefix(n.Mounts[0], "/run/netns/"); ok {
			return "netns " + name
		}
		return "mount " + n.Mounts[0]
	case len(n.PIDs) > 0:
		p, ok := FindProc(procs, n.PIDs[0])
		if !ok {
			return ""
		}
		if c := containerOf(p); c != "" {
			return "container " + c
		}
		return "pid " + strconv.Itoa(int(p.PID)) + " " + p.Comm
	}
	return ""
}
