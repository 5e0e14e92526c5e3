// SPDX-License-Identifier: Apache-2.0

package tracer

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/output"
)

// stats counts events by command name, as forkstat -S does, and how long
// the processes that exited lived.
type stats struct {
	byComm map[string]*commStats
}

type commStats struct {
	kinds    [event.KindCount]uint64
	exits    uint64
	lifetime time.Duration
}

// statsKinds are the columns, in order.
var statsKinds = []event.Kind{event.Fork, event.Exec, event.Exit, event.Clone, event.Unshare, event.Setns, event.Comm, event.UID, event.SID, event.Ptrace}

func newStats() *stats { return &stats{byComm: map[string]*commStats{}} }

func (st *stats) add(e *event.Event) {
	if st == nil || e.Kind == event.Lost {
		return
	}
	c := st.byComm[string(e.Comm)]
	if c == nil {
		c = &commStats{}
		st.byComm[string(e.Comm)] = c
	}
	c.kinds[e.Kind]++
	if e.Kind == event.Exit {
		c.exits++
		c.lifetime += e.Duration
		if e.CoreDumped {
			c.kinds[event.Core]++
		}
	}
}

// write prints the table: one row per command name, busiest first.
func (st *stats) write(w io.Writer) {
	if st == nil {
		return
	}
	names := make([]string, 0, len(st.byComm))
	total := func(c *commStats) (n uint64) {
		for _, k := range statsKinds {
			n += c.kinds[k]
		}
		return n
	}
	for n := range st.byComm {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := total(st.byComm[names[i]]), total(st.byComm[names[j]])
		if a != b {
			return a > b
		}
		return names[i] < names[j]
	})
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.AlignRight)
	for _, k := range statsKinds {
		fmt.Fprintf(tw, "%s\t", k)
	}
	fmt.Fprint(tw, "core\ttotal\tmean life\t COMM\n")
	for _, n := range names {
		c := st.byComm[n]
		for _, k := range statsKinds {
			fmt.Fprintf(tw, "%d\t", c.kinds[k])
		}
		life := "-"
		if c.exits > 0 {
			life = (c.lifetime / time.Duration(c.exits)).Round(time.Microsecond).String()
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t %s\n", c.kinds[event.Core], total(c), life, output.AppendEscaped(nil, []byte(n)))
	}
	tw.Flush()
}
