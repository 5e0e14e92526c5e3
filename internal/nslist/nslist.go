// SPDX-License-Identifier: Apache-2.0

// Package nslist is `nstrace ns`: every namespace on the host, who is in
// it and who keeps it, with the inodes and container names the feed uses.
package nslist

import (
	"encoding/json"
	"fmt"
	"io"
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
}

// world is what a listing reads: /proc, mounts, containers.
type world struct {
	procRoot   string
	mountinfo  string
	host       ns.Set
	procs      []procfs.Proc
	containers *container.Registry
	cgroup2    string
}

// Run lists what q asks for under procRoot; host is the host's namespaces.
func Run(procRoot string, host ns.Set, q Query, out io.Writer) error {
	roots := container.DefaultRoots
	roots.Cgroup2, _ = procfs.Cgroup2Mount(procRoot + "/self/mountinfo")
	w := &world{
		procRoot:   procRoot,
		mountinfo:  procRoot + "/self/mountinfo",
		host:       host,
		procs:      procfs.Procs(procRoot),
		containers: container.NewRegistry(roots, false),
		cgroup2:    roots.Cgroup2,
	}
	switch {
	case q.PID != 0:
		return w.nsOfProcess(q.PID, q.JSON, out)
	case q.Inode != 0:
		return w.procsInNS(q, out)
	}
	return w.listNS(q.JSON, out)
}

func (w *world) containerOf(p procfs.Proc) *event.Container {
	return w.containers.Lookup(container.CgroupOfPath(w.cgroup2, p.Cgroup))
}

// nsRow is one namespace in a listing; JSON keys match the feed's.
type nsRow struct {
	Inode     uint64                `json:"ns"`
	Type      string                `json:"type"`
	NProcs    int                   `json:"nprocs"`
	PID       uint32                `json:"pid,omitempty"`
	Comm      string                `json:"comm,omitempty"`
	Container *output.ContainerJSON `json:"container,omitempty"`
	Host      bool                  `json:"host"`
	Mounts    []string              `json:"mounts,omitempty"`
	FDs       []string              `json:"fds,omitempty"`
}

// procRow is one process in a namespace.
type procRow struct {
	PID       uint32                `json:"pid"`
	NSPID     uint32                `json:"nspid"`
	PPID      uint32                `json:"ppid"`
	Comm      string                `json:"comm"`
	Cgroup    string                `json:"cgroup"`
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

func (w *world) listNS(asJSON bool, out io.Writer) error {
	var rows []nsRow
	for _, n := range procfs.NamespacesHeldOpen(w.procRoot, w.mountinfo, w.procs) {
		r := nsRow{Inode: n.Inode, Type: n.Type.String(), NProcs: len(n.PIDs), Host: w.host[n.Type] == n.Inode, Mounts: n.Mounts, FDs: n.FDs}
		if len(n.PIDs) > 0 {
			if p, ok := procfs.FindProc(w.procs, n.PIDs[0]); ok {
				r.PID, r.Comm = p.PID, p.Comm
				// A host namespace is no container's, whoever its
				// lowest readable pid is.
				if !r.Host {
					r.Container = output.ContainerForJSON(w.containerOf(p))
				}
			}
		}
		rows = append(rows, r)
	}
	var unreadable []procfs.Proc
	for _, p := range w.procs {
		if !p.Readable {
			unreadable = append(unreadable, p)
		}
	}
	if asJSON {
		if err := encodeLines(out, rows); err != nil {
			return err
		}
		var marks []map[string]any
		for _, p := range unreadable {
			marks = append(marks, map[string]any{"pid": p.PID, "comm": p.Comm, "unreadable": true})
		}
		return encodeLines(out, marks)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NS\tTYPE\tNPROCS\tPID\tCOMM\tCONTAINER\tHOST\tHELD BY")
	for _, r := range rows {
		pid, comm := "-", "-"
		if r.PID != 0 {
			pid, comm = strconv.Itoa(int(r.PID)), escape(r.Comm)
		}
		held := strings.Join(append(append([]string{}, r.Mounts...), prefixAll("fd ", r.FDs)...), ",")
		if held == "" {
			held = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.Inode, r.Type, r.NProcs, pid, comm, containerCell(r.Container), yesNo(r.Host), escape(held))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(unreadable) > 0 {
		var pids []string
		for _, p := range unreadable {
			pids = append(pids, fmt.Sprintf("%d (%s)", p.PID, escape(p.Comm)))
		}
		_, err := fmt.Fprintf(out, "unreadable namespaces: %s\n", strings.Join(pids, ", "))
		return err
	}
	return nil
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
			rows = append(rows, procRow{p.PID, p.NSPID, p.PPID, p.Comm, p.Cgroup, output.ContainerForJSON(w.containerOf(p))})
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
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%s\n", r.PID, r.NSPID, r.PPID, escape(r.Comm), containerCell(r.Container), escape(r.Cgroup))
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
	fmt.Fprintf(out, "pid %d (%s), nspid %d, ppid %d, container %s, cgroup %s\n", p.PID, escape(p.Comm), p.NSPID, p.PPID, containerCell(c), escape(p.Cgroup))
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
