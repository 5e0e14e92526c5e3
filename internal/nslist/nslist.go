// SPDX-License-Identifier: Apache-2.0

// Package nslist is `nstrace ns`: every namespace on the host, who is in
// it and who keeps it, with the inodes and container names the feed uses.
package nslist

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/output"
	"github.com/nstrace/nstrace/internal/procfs"
)

// Query is what to list.
type Query struct {
	// One of: the processes in this namespace (Inode, with Type unless
	// AnyType), the namespaces of this process (PID), or everything.
	Inode   uint64
	Type    ns.Type
	AnyType bool
	PID     uint32
	JSON    bool
	// OnlyType limits the full listing to namespaces of type ListType
	// (lsns -t).
	OnlyType bool
	ListType ns.Type
	// Tree draws the full listing as a tree (lsns -T): "owner" puts each
	// namespace under the user namespace that owns it, "parent" pid and
	// user namespaces under the ones they nest in.
	Tree string
	// Members lists, for each namespace, every process in it and every
	// container those belong to.
	Members bool
	// Dot draws the containers and the namespaces they hold as a
	// Graphviz graph.
	Dot bool
}

// world is what a listing reads: /proc, mounts, containers.
type world struct {
	procRoot   string
	mountinfo  string
	host       ns.Set
	procs      []procfs.Proc
	containers *container.Registry
	cgroups    procfs.Hierarchies
	// byCgroup is each cgroup's container, asked once per listing.
	byCgroup map[cgroupPath]*event.Container
}

// Run lists what q asks for under procRoot; host is the host's namespaces.
func Run(procRoot string, host ns.Set, q Query, out io.Writer) error {
	roots := container.DefaultRoots
	roots.Cgroups = procfs.FindHierarchies(procRoot+"/self/mountinfo", procfs.CgroupV1Controllers)
	return run(procRoot, host, roots, q, out)
}

// run is Run with the runtimes' state, and the cgroup hierarchies, under
// roots.
func run(procRoot string, host ns.Set, roots container.Roots, q Query, out io.Writer) error {
	w := &world{
		procRoot:   procRoot,
		mountinfo:  procRoot + "/self/mountinfo",
		host:       host,
		procs:      procfs.Procs(procRoot),
		containers: container.NewRegistry(roots, false),
		cgroups:    roots.Cgroups,
		byCgroup:   map[cgroupPath]*event.Container{},
	}
	defer w.containers.Close()
	switch {
	case q.PID != 0:
		return w.nsOfProcess(q.PID, q.JSON, out)
	case q.Inode != 0:
		return w.procsInNS(q, out)
	}
	return w.listNS(q, out)
}

func (w *world) containerOf(p procfs.Proc) *event.Container {
	var k cgroupPath
	k.path, k.v1 = w.cgroups.CgroupOf(p)
	c, ok := w.byCgroup[k]
	if !ok {
		c = w.containers.LookupPath(k.path, k.v1)
		w.byCgroup[k] = c
	}
	return c
}

// cgroupPath is a cgroup's path in the v2 hierarchy, or the v1 one.
type cgroupPath struct {
	path string
	v1   bool
}

// cgroupOf is the path of the cgroup that identifies p, in its
// hierarchy, and the controller of that hierarchy where it is a v1 one
// (the feed's cgroup_v1), else "".
func (w *world) cgroupOf(p procfs.Proc) (path, v1 string) {
	path, isV1 := w.cgroups.CgroupOf(p)
	if isV1 {
		v1 = w.cgroups.Controller
	}
	return path, v1
}

// cgroupCell writes a cgroup's path, marked with its controller where it
// is of a v1 hierarchy: "/v1demo (pids, v1)".
func cgroupCell(path, v1 string) string {
	if v1 != "" {
		path += " (" + v1 + ", v1)"
	}
	return escape(path)
}

func (w *world) proc(pid uint32) (procfs.Proc, bool) { return procfs.FindProc(w.procs, pid) }

// nsRow is one namespace in a listing; JSON keys match the feed's.
type nsRow struct {
	Inode     uint64                `json:"ns"`
	Type      string                `json:"type"`
	NProcs    int                   `json:"nprocs"`
	PID       uint32                `json:"pid,omitempty"`
	Comm      string                `json:"comm,omitempty"`
	User      string                `json:"user,omitempty"`
	Parent    uint64                `json:"pns,omitempty"`
	Owner     uint64                `json:"ons,omitempty"`
	Container *output.ContainerJSON `json:"container,omitempty"`
	// Containers are every container with processes in it, in the order
	// of their lowest pid; none for the host's namespaces.
	Containers []holder `json:"containers,omitempty"`
	Host       bool     `json:"host"`
	Mounts     []string `json:"mounts,omitempty"`
	FDs        []string `json:"fds,omitempty"`
	pids       []uint32 // every process in it
	members    []holder // their containers, the host's namespaces too
}

// nsFile is a path that opens n: a member's link, a bind mount, an fd.
func (w *world) nsFile(n procfs.Namespace) string {
	switch {
	case len(n.PIDs) > 0:
		return fmt.Sprintf("%s/%d/ns/%s", w.procRoot, n.PIDs[0], n.Type)
	case len(n.Mounts) > 0:
		return n.Mounts[0]
	case len(n.FDs) > 0:
		pid, fd, _ := strings.Cut(n.FDs[0], "/")
		return w.procRoot + "/" + pid + "/fd/" + fd
	}
	return ""
}

// procRow is one process in a namespace.
type procRow struct {
	PID       uint32                `json:"pid"`
	NSPID     uint32                `json:"nspid"`
	PPID      uint32                `json:"ppid"`
	Comm      string                `json:"comm"`
	Cgroup    string                `json:"cgroup"`
	CgroupV1  string                `json:"cgroup_v1,omitempty"`
	Container *output.ContainerJSON `json:"container,omitempty"`
}

// typeRow is one namespace of a process.
type typeRow struct {
	Type      string                `json:"type"`
	Inode     uint64                `json:"ns"`
	Host      bool                  `json:"host"`
	NProcs    int                   `json:"nprocs"`
	Container *output.ContainerJSON `json:"container,omitempty"`
}

func (w *world) listNS(q Query, out io.Writer) error {
	var rows []nsRow
	for _, n := range procfs.NamespacesHeldOpen(w.procRoot, w.mountinfo, w.procs) {
		r := nsRow{Inode: n.Inode, Type: n.Type.String(), NProcs: len(n.PIDs), Host: w.host[n.Type] == n.Inode, Mounts: n.Mounts, FDs: n.FDs,
			pids: n.PIDs, members: w.holdersOf(n.PIDs)}
		// The host's namespaces are everybody's, no container's.
		if !r.Host {
			r.Containers = r.members
		}
		if len(n.PIDs) > 0 {
			if p, ok := w.proc(n.PIDs[0]); ok {
				r.PID, r.Comm, r.User = p.PID, p.Comm, procfs.UserName(p.UID)
				// A host namespace is no container's, whoever its
				// lowest readable pid is.
				if !r.Host {
					r.Container = output.ContainerForJSON(w.containerOf(p))
				}
			}
		}
		if rel, err := procfs.ReadRelations(w.nsFile(n)); err == nil {
			r.Parent, r.Owner = rel.Parent, rel.Owner
		}
		rows = append(rows, r)
	}
	if q.Tree != "" {
		return writeTree(out, rows, q)
	}
	if q.OnlyType {
		rows = ofType(rows, q.ListType)
	}
	var err error
	switch {
	case q.Dot:
		return writeDot(out, rows)
	case q.Members:
		err = writeMembers(out, rows, q.JSON)
	case q.JSON:
		err = encodeLines(out, rows)
	default:
		err = writeTable(out, rows)
	}
	if err != nil {
		return err
	}
	return w.writeUnreadable(out, q.JSON)
}

// writeTable is the full listing's table.
func writeTable(out io.Writer, rows []nsRow) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NS\tTYPE\tNPROCS\tPID\tUSER\tCOMM\tPNS\tONS\tCONTAINER\tHOST\tHELD BY")
	for _, r := range rows {
		pid, user, comm := "-", "-", "-"
		if r.PID != 0 {
			pid, user, comm = strconv.Itoa(int(r.PID)), escape(r.User), escape(r.Comm)
		}
		held := strings.Join(append(append([]string{}, r.Mounts...), prefixAll("fd ", r.FDs)...), ",")
		if held == "" {
			held = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Inode, r.Type, r.NProcs, pid, user, comm,
			inodeCell(r.Parent), inodeCell(r.Owner), holdersCell(r.Containers, r.NProcs), yesNo(r.Host), escape(held))
	}
	return tw.Flush()
}

// writeUnreadable names the processes whose namespaces could not be read,
// after a listing: a line, or in JSON an object each.
func (w *world) writeUnreadable(out io.Writer, asJSON bool) error {
	var unreadable []procfs.Proc
	for _, p := range w.procs {
		if !p.Readable {
			unreadable = append(unreadable, p)
		}
	}
	if asJSON {
		var marks []map[string]any
		for _, p := range unreadable {
			marks = append(marks, map[string]any{"pid": p.PID, "comm": p.Comm, "unreadable": true})
		}
		return encodeLines(out, marks)
	}
	if len(unreadable) == 0 {
		return nil
	}
	var pids []string
	for _, p := range unreadable {
		pids = append(pids, fmt.Sprintf("%d (%s)", p.PID, escape(p.Comm)))
	}
	_, err := fmt.Fprintf(out, "unreadable namespaces: %s\n", strings.Join(pids, ", "))
	return err
}

func (w *world) procsInNS(q Query, out io.Writer) error {
	var rows []procRow
	for _, p := range w.procs {
		in := false
		for t := ns.Type(0); t < ns.Count; t++ {
			if p.NS[t] == q.Inode && (q.AnyType || q.Type == t) {
				in = true
			}
		}
		if in {
			r := procRow{PID: p.PID, NSPID: p.NSPID, PPID: p.PPID, Comm: p.Comm, Container: output.ContainerForJSON(w.containerOf(p))}
			r.Cgroup, r.CgroupV1 = w.cgroupOf(p)
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		for _, m := range procfs.NSMounts(w.mountinfo) {
			if m.Inode == q.Inode {
				return fmt.Errorf("no process is in %s:[%d]; it is kept by the bind mount %s", m.Type, m.Inode, m.Path)
			}
		}
		return fmt.Errorf("no process is in namespace %d", q.Inode)
	}
	if q.JSON {
		return encodeLines(out, rows)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PID\tNSPID\tPPID\tCOMM\tCONTAINER\tCGROUP")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%s\n", r.PID, r.NSPID, r.PPID, escape(r.Comm), containerCell(r.Container), cgroupCell(r.Cgroup, r.CgroupV1))
	}
	return tw.Flush()
}

func (w *world) nsOfProcess(pid uint32, asJSON bool, out io.Writer) error {
	p, ok := procfs.FindProc(w.procs, pid)
	if !ok {
		return fmt.Errorf("no process %d", pid)
	}
	if !p.Readable {
		return fmt.Errorf("the namespaces of process %d (%s) are unreadable", pid, p.Comm)
	}
	count := map[uint64]int{}
	for _, q := range w.procs {
		for _, t := range ns.Listed {
			if q.NS[t] != 0 {
				count[q.NS[t]]++
			}
		}
	}
	c := output.ContainerForJSON(w.containerOf(p))
	var rows []typeRow
	for t := ns.Type(0); t < ns.Count; t++ {
		if p.NS[t] != 0 {
			r := typeRow{t.String(), p.NS[t], p.NS[t] == w.host[t], count[p.NS[t]], c}
			if r.Host {
				r.Container = nil // the host's, though the process is in a container
			}
			rows = append(rows, r)
		}
	}
	if asJSON {
		return encodeLines(out, rows)
	}
	fmt.Fprintf(out, "pid %d (%s), nspid %d, ppid %d, container %s, cgroup %s\n", p.PID, escape(p.Comm), p.NSPID, p.PPID, containerCell(c), cgroupCell(w.cgroupOf(p)))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tNS\tHOST\tNPROCS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\n", r.Type, r.Inode, yesNo(r.Host), r.NProcs)
	}
	return tw.Flush()
}

// encodeLines writes one JSON object per line.
func encodeLines[T any](out io.Writer, rows []T) error {
	enc := json.NewEncoder(out)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

func containerCell(c *output.ContainerJSON) string {
	if c == nil {
		return "-"
	}
	return escape(c.Short())
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func prefixAll(p string, s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = p + v
	}
	return out
}

// escape keeps a name from changing the terminal or the table.
func escape(s string) string {
	return string(output.AppendEscaped(nil, []byte(s)))
}

func inodeCell(ino uint64) string {
	if ino == 0 {
		return "-"
	}
	return strconv.FormatUint(ino, 10)
}

func ofType(rows []nsRow, t ns.Type) []nsRow {
	var out []nsRow
	for _, r := range rows {
		if r.Type == t.String() {
			out = append(out, r)
		}
	}
	return out
}

// writeTree draws rows as lsns -T does: each namespace under its owner
// (q.Tree "owner") or its parent ("parent"); a namespace whose owner or
// parent is not listed is a root. With OnlyType, only that type's
// namespaces are drawn, under the same rule.
func writeTree(out io.Writer, rows []nsRow, q Query) error {
	if q.OnlyType {
		rows = ofType(rows, q.ListType)
	}
	up := func(r nsRow) uint64 { return r.Owner }
	if q.Tree == "parent" {
		up = func(r nsRow) uint64 { return r.Parent }
	}
	// Inodes are unique across types: one inode space for all of nsfs.
	listed := map[uint64]bool{}
	for _, r := range rows {
		listed[r.Inode] = true
	}
	kids := map[uint64][]nsRow{}
	var roots []nsRow
	for _, r := range rows {
		if p := up(r); p != 0 && listed[p] && p != r.Inode {
			kids[p] = append(kids[p], r)
		} else {
			roots = append(roots, r)
		}
	}
	// User namespaces first under each node: they carry the rest.
	order := func(rs []nsRow) {
		sort.SliceStable(rs, func(i, j int) bool {
			ui, uj := rs[i].Type == "user", rs[j].Type == "user"
			if ui != uj {
				return ui
			}
			return false
		})
	}
	order(roots)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NS\tTYPE\tNPROCS\tPID\tUSER\tCOMM\tCONTAINER")
	var draw func(r nsRow, prefix, branch string, depth int)
	draw = func(r nsRow, prefix, branch string, depth int) {
		pid, user, comm := "-", "-", "-"
		if r.PID != 0 {
			pid, user, comm = strconv.Itoa(int(r.PID)), escape(r.User), escape(r.Comm)
		}
		fmt.Fprintf(tw, "%s%s%d\t%s\t%d\t%s\t%s\t%s\t%s\n", prefix, branch, r.Inode, r.Type, r.NProcs, pid, user, comm, holdersCell(r.Containers, r.NProcs))
		if depth > 64 {
			return
		}
		cs := kids[r.Inode]
		order(cs)
		next := prefix
		switch branch {
		case "├─":
			next += "│ "
		case "└─":
			next += "  "
		}
		for i, c := range cs {
			b := "├─"
			if i == len(cs)-1 {
				b = "└─"
			}
			draw(c, next, b, depth+1)
		}
	}
	for _, r := range roots {
		draw(r, "", "", 0)
	}
	return tw.Flush()
}
