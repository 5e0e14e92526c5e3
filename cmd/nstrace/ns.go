// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/nsinfo"
	"github.com/nstrace/nstrace/internal/output"
)

const nsUsage = `Usage: nstrace ns [--json]              every namespace and who is in it
       nstrace ns [--json] INODE|TYPE:INODE   the processes in one namespace
       nstrace ns [--json] -p PID             the namespaces of one process

Flags:
`

// nsWorld is what the ns command reads: /proc, mounts, containers.
type nsWorld struct {
	procRoot   string
	mountinfo  string
	host       event.NS
	procs      []nsinfo.Proc
	containers *container.Registry
}

func loadWorld(procRoot string) *nsWorld {
	host, _ := nsinfo.ReadNS(procRoot, "self")
	return &nsWorld{
		procRoot:   procRoot,
		mountinfo:  procRoot + "/self/mountinfo",
		host:       host,
		procs:      nsinfo.Procs(procRoot),
		containers: container.NewRegistry(procRoot, container.RuncRoots, host[event.NSPid]),
	}
}

func (w *nsWorld) containerOf(p nsinfo.Proc) *event.Container {
	return w.containers.Lookup(p.Cgroup, p.NS[event.NSPid])
}

// nsRow is one namespace in a listing; JSON keys match the feed's.
type nsRow struct {
	Inode     uint64         `json:"ns"`
	Type      string         `json:"type"`
	NProcs    int            `json:"nprocs"`
	PID       uint32         `json:"pid,omitempty"`
	Comm      string         `json:"comm,omitempty"`
	Container *containerJSON `json:"container,omitempty"`
	Host      bool           `json:"host"`
	Mounts    []string       `json:"mounts,omitempty"`
	FDs       []string       `json:"fds,omitempty"`
}

type containerJSON struct {
	ID      string `json:"id"`
	Name    string `json:"name,omitempty"`
	Runtime string `json:"runtime"`
	PodUID  string `json:"pod_uid,omitempty"`
}

func toJSON(c *event.Container) *containerJSON {
	if c == nil {
		return nil
	}
	return &containerJSON{c.ID, c.Name, c.Runtime, c.PodUID}
}

// procRow is one process in a namespace.
type procRow struct {
	PID       uint32         `json:"pid"`
	NSPID     uint32         `json:"nspid"`
	PPID      uint32         `json:"ppid"`
	Comm      string         `json:"comm"`
	Cgroup    string         `json:"cgroup"`
	Container *containerJSON `json:"container,omitempty"`
}

// typeRow is one namespace of a process.
type typeRow struct {
	Type      string         `json:"type"`
	Inode     uint64         `json:"ns"`
	Host      bool           `json:"host"`
	NProcs    int            `json:"nprocs"`
	Container *containerJSON `json:"container,omitempty"`
}

func nsMain(args []string, stdout, stderr io.Writer, procRoot string) int {
	fs := pflag.NewFlagSet("nstrace ns", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "one JSON object per line")
	pid := fs.Uint32P("pid", "p", 0, "the namespaces of this process")
	help := fs.BoolP("help", "h", false, "show this help")
	usage := func(err error) int {
		fmt.Fprintf(stderr, "nstrace ns: %v\nRun 'nstrace ns --help' for usage.\n", err)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		return usage(err)
	}
	if *help {
		fmt.Fprint(stderr, nsUsage, fs.FlagUsages())
		return 0
	}
	if fs.NArg() > 1 || (fs.NArg() == 1 && fs.Changed("pid")) {
		return usage(fmt.Errorf("give one namespace, or -p PID"))
	}
	var filter nsSpec
	if fs.NArg() == 1 {
		var err error
		filter, err = parseNSSpec(fs.Arg(0))
		if err != nil || filter.pid != 0 {
			return usage(fmt.Errorf("want INODE or TYPE:INODE, got %q", fs.Arg(0)))
		}
	}
	w := loadWorld(procRoot)
	var err error
	switch {
	case fs.Changed("pid"):
		err = nsOfProcess(w, *pid, *asJSON, stdout)
	case fs.NArg() == 1:
		err = procsInNS(w, filter, *asJSON, stdout)
	default:
		err = listNS(w, *asJSON, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "nstrace ns: %v\n", err)
		return 1
	}
	return 0
}

func listNS(w *nsWorld, asJSON bool, out io.Writer) error {
	var rows []nsRow
	for _, n := range nsinfo.NamespacesHeldOpen(w.procRoot, w.mountinfo, w.procs) {
		r := nsRow{Inode: n.Inode, Type: n.Type.String(), NProcs: len(n.PIDs), Host: w.host[n.Type] == n.Inode, Mounts: n.Mounts, FDs: n.FDs}
		if len(n.PIDs) > 0 {
			if p, ok := nsinfo.FindProc(w.procs, n.PIDs[0]); ok {
				r.PID, r.Comm = p.PID, p.Comm
				r.Container = toJSON(w.containerOf(p))
			}
		}
		rows = append(rows, r)
	}
	var unreadable []nsinfo.Proc
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
			pid, comm = strconv.Itoa(int(r.PID)), escapeCell(r.Comm)
		}
		held := strings.Join(append(append([]string{}, r.Mounts...), prefixAll("fd ", r.FDs)...), ",")
		if held == "" {
			held = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.Inode, r.Type, r.NProcs, pid, comm, containerCell(r.Container), yesNo(r.Host), held)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(unreadable) > 0 {
		var pids []string
		for _, p := range unreadable {
			pids = append(pids, fmt.Sprintf("%d (%s)", p.PID, escapeCell(p.Comm)))
		}
		_, err := fmt.Fprintf(out, "unreadable namespaces: %s\n", strings.Join(pids, ", "))
		return err
	}
	return nil
}

func procsInNS(w *nsWorld, spec nsSpec, asJSON bool, out io.Writer) error {
	var rows []procRow
	for _, p := range w.procs {
		in := false
		for t := event.NSType(0); t < event.NSCount; t++ {
			if p.NS[t] == spec.inode && (spec.anyT || spec.typ == t) {
				in = true
			}
		}
		if in {
			rows = append(rows, procRow{p.PID, p.NSPID, p.PPID, p.Comm, p.Cgroup, toJSON(w.containerOf(p))})
		}
	}
	if len(rows) == 0 {
		for _, m := range nsinfo.NSMounts(w.mountinfo) {
			if m.Inode == spec.inode {
				return fmt.Errorf("no process is in %s:[%d]; it is kept by the bind mount %s", m.Type, m.Inode, m.Path)
			}
		}
		return fmt.Errorf("no process is in namespace %d", spec.inode)
	}
	if asJSON {
		return encodeLines(out, rows)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PID\tNSPID\tPPID\tCOMM\tCONTAINER\tCGROUP")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%s\n", r.PID, r.NSPID, r.PPID, escapeCell(r.Comm), containerCell(r.Container), escapeCell(r.Cgroup))
	}
	return tw.Flush()
}

func nsOfProcess(w *nsWorld, pid uint32, asJSON bool, out io.Writer) error {
	p, ok := nsinfo.FindProc(w.procs, pid)
	if !ok {
		return fmt.Errorf("no process %d", pid)
	}
	if !p.Readable {
		return fmt.Errorf("the namespaces of process %d (%s) are unreadable", pid, p.Comm)
	}
	count := map[uint64]int{}
	for _, q := range w.procs {
		for _, t := range nsinfo.ListedTypes {
			if q.NS[t] != 0 {
				count[q.NS[t]]++
			}
		}
	}
	c := toJSON(w.containerOf(p))
	var rows []typeRow
	for t := event.NSType(0); t < event.NSCount; t++ {
		if p.NS[t] != 0 {
			rows = append(rows, typeRow{t.String(), p.NS[t], p.NS[t] == w.host[t], count[p.NS[t]], c})
		}
	}
	if asJSON {
		return encodeLines(out, rows)
	}
	fmt.Fprintf(out, "pid %d (%s), nspid %d, ppid %d, container %s, cgroup %s\n", p.PID, escapeCell(p.Comm), p.NSPID, p.PPID, containerCell(c), escapeCell(p.Cgroup))
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

func containerCell(c *containerJSON) string {
	if c == nil {
		return "-"
	}
	return escapeCell((&event.Container{ID: c.ID, Name: c.Name}).Short())
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

// escapeCell keeps a name from changing the terminal or the table.
func escapeCell(s string) string {
	return string(output.AppendEscaped(nil, []byte(s)))
}
