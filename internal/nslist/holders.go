// SPDX-License-Identifier: Apache-2.0

package nslist

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/output"
)

// holder is a container with processes in a namespace, and those
// processes.
type holder struct {
	c    *event.Container
	pids []uint32
}

// MarshalJSON writes the feed's container object with the holder's pids
// added: {"id":…, "name":…, …, "pids":[…]}.
func (h holder) MarshalJSON() ([]byte, error) {
	b, err := output.ContainerForJSON(h.c).MarshalJSON()
	if err != nil {
		return nil, err
	}
	pids, err := json.Marshal(h.pids)
	if err != nil {
		return nil, err
	}
	b = append(b[:len(b)-1], `,"pids":`...)
	return append(append(b, pids...), '}'), nil
}

// holdersOf gathers the containers of pids (in order), each once, in the
// order of their lowest pid. A process whose container the attribution
// does not know for its cgroup is nobody's: no guess.
func (w *world) holdersOf(pids []uint32) []holder {
	var hs []holder
	at := map[string]int{}
	for _, pid := range pids {
		p, ok := w.proc(pid)
		if !ok {
			continue
		}
		c := w.containerOf(p)
		if c == nil || c.ID == "" {
			continue
		}
		i, seen := at[c.ID]
		if !seen {
			i = len(hs)
			at[c.ID] = i
			hs = append(hs, holder{c: c})
		}
		hs[i].pids = append(hs[i].pids, pid)
	}
	return hs
}

// podKey names a pod for comparison: by its uid where known, else by its
// namespace and name; "" for no pod.
func podKey(p *event.Pod) string {
	switch {
	case p == nil:
		return ""
	case p.UID != "":
		return "uid " + p.UID
	case p.Name != "":
		return "name " + p.Namespace + "/" + p.Name
	}
	return ""
}

// onePod is the pod of every holder when there are several and all are
// one pod's containers, known the same way; otherwise nil.
func onePod(hs []holder) *event.Pod {
	if len(hs) < 2 {
		return nil
	}
	k := podKey(hs[0].c.Pod)
	if k == "" {
		return nil
	}
	for _, h := range hs[1:] {
		if podKey(h.c.Pod) != k {
			return nil
		}
	}
	return hs[0].c.Pod
}

// podName is how a pod is named: namespace/name, or its uid.
func podName(p *event.Pod) string {
	switch {
	case p.Name != "" && p.Namespace != "":
		return p.Namespace + "/" + p.Name
	case p.Name != "":
		return p.Name
	}
	return p.UID
}

// inPod is how a container is named beside its pod's name: its name in
// the pod spec, (sandbox) for the pod's sandbox, else as everywhere.
func inPod(c *event.Container) string {
	switch {
	case c.Pod != nil && c.Pod.Sandbox:
		return event.SandboxName
	case c.Pod != nil && c.Pod.Container != "":
		return c.Pod.Container
	}
	return c.Short()
}

// cellMax is how many containers a table cell names before it counts
// the rest.
const cellMax = 3

// holdersCell names the containers holding a namespace that nprocs
// processes are in: the pod once when they are one pod's containers,
// else each container, past cellMax only the first two; then ",+N", N
// the containers not named and the processes of no known container, one
// each. So the pod alone means every process in it is one of the pod's.
func holdersCell(hs []holder, nprocs int) string {
	if len(hs) == 0 {
		return "-"
	}
	rest := nprocs - heldPIDs(hs)
	var names []string
	if p := onePod(hs); p != nil {
		names = append(names, escape("pod "+podName(p)))
	} else {
		for i, h := range hs {
			if len(hs) > cellMax && i == cellMax-1 {
				rest += len(hs) - i
				break
			}
			names = append(names, escape(h.c.Short()))
		}
	}
	if rest > 0 {
		names = append(names, "+"+strconv.Itoa(rest))
	}
	return strings.Join(names, ",")
}

// heldPIDs counts the processes of holders.
func heldPIDs(hs []holder) int {
	n := 0
	for _, h := range hs {
		n += len(h.pids)
	}
	return n
}

// compactPIDs writes pids (ascending) with runs as ranges: "1-3,7".
func compactPIDs(pids []uint32) string {
	if len(pids) == 0 {
		return "-"
	}
	var b []byte
	for i := 0; i < len(pids); {
		j := i
		for j+1 < len(pids) && pids[j+1] == pids[j]+1 {
			j++
		}
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(pids[i]), 10)
		if j > i {
			b = append(b, '-')
			b = strconv.AppendUint(b, uint64(pids[j]), 10)
		}
		i = j + 1
	}
	return string(b)
}

// memberRow is one namespace in the members listing: every process in
// it, and the containers among them.
type memberRow struct {
	Inode      uint64   `json:"ns"`
	Type       string   `json:"type"`
	NProcs     int      `json:"nprocs"`
	Host       bool     `json:"host"`
	PIDs       []uint32 `json:"pids"`
	Containers []holder `json:"containers"`
}

// writeMembers lists each namespace with its processes and their
// containers, the host's namespaces included: whoever is in it.
func writeMembers(out io.Writer, rows []nsRow, asJSON bool) error {
	if asJSON {
		ms := make([]memberRow, len(rows))
		for i, r := range rows {
			ms[i] = memberRow{r.Inode, r.Type, r.NProcs, r.Host, r.pids, r.members}
			if ms[i].PIDs == nil {
				ms[i].PIDs = []uint32{}
			}
			if ms[i].Containers == nil {
				ms[i].Containers = []holder{}
			}
		}
		return encodeLines(out, ms)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NS\tTYPE\tNPROCS\tHOST\tCONTAINERS\tPIDS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\n", r.Inode, r.Type, r.NProcs, yesNo(r.Host), holdersCell(r.members, r.NProcs), pidsCell(r.pids, r.members))
	}
	return tw.Flush()
}

// pidsCell writes every pid of a namespace, compact, by container: those
// of no known container first, then each holder's, "NAME: PIDS", as in
// "1-40,52; pause: 812; app: 840".
func pidsCell(pids []uint32, hs []holder) string {
	if len(pids) == 0 {
		return "-"
	}
	held := map[uint32]bool{}
	for _, h := range hs {
		for _, p := range h.pids {
			held[p] = true
		}
	}
	var rest []uint32
	for _, p := range pids {
		if !held[p] {
			rest = append(rest, p)
		}
	}
	var groups []string
	if len(rest) > 0 {
		groups = append(groups, compactPIDs(rest))
	}
	name := (*event.Container).Short
	if onePod(hs) != nil {
		name = inPod
	}
	for _, h := range hs {
		groups = append(groups, escape(name(h.c))+": "+compactPIDs(h.pids))
	}
	return strings.Join(groups, "; ")
}
