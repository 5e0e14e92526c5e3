// SPDX-License-Identifier: Apache-2.0

package nslist

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/nstrace/nstrace/internal/event"
)

// Colours of the picture: a namespace that several containers hold, and
// the edges into it.
const (
	sharedFill = "#fde68a"
	sharedEdge = "#b45309"
	podColour  = "#2563eb"
)

// writeDot draws, as a Graphviz digraph, every container (a pod's inside
// the pod's cluster) and an edge to each namespace it holds that is not
// the host's. A namespace that several containers hold is filled and its
// edges drawn bold. Namespaces no container holds, and the host's, are
// left out: every process is in the latter. Nodes come in a fixed order,
// so the same namespaces draw the same text.
func writeDot(out io.Writer, rows []nsRow) error {
	var drawn []nsRow
	byID := map[string]*event.Container{}
	for _, r := range rows {
		if r.Host || len(r.Containers) == 0 {
			continue
		}
		drawn = append(drawn, r)
		for _, h := range r.Containers {
			if byID[h.c.ID] == nil {
				byID[h.c.ID] = h.c
			}
		}
	}
	var cs []*event.Container
	for _, c := range byID {
		cs = append(cs, c)
	}
	sort.Slice(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if ka, kb := podKey(a.Pod), podKey(b.Pod); ka != kb {
			return ka < kb
		}
		if sa, sb := a.Short(), b.Short(); sa != sb {
			return sa < sb
		}
		return a.ID < b.ID
	})

	b := bufio.NewWriter(out)
	b.WriteString("// nstrace ns --dot: containers, pods as clusters, and the namespaces they\n" +
		"// hold; the host's namespaces are left out. Render with dot -Tsvg.\n")
	b.WriteString("digraph namespaces {\n\trankdir=LR;\n\tgraph [fontname=\"Helvetica,Arial,sans-serif\", fontsize=12];\n" +
		"\tnode [fontname=\"Helvetica,Arial,sans-serif\", fontsize=11];\n\tedge [color=\"#666666\"];\n")
	cluster := 0
	for i := 0; i < len(cs); {
		k := podKey(cs[i].Pod)
		if k == "" {
			fmt.Fprintf(b, "\t%s [label=%s, shape=box, style=rounded];\n", containerNode(cs[i]), dotLabel(containerLines(cs[i], false)...))
			i++
			continue
		}
		fmt.Fprintf(b, "\tsubgraph cluster_%d {\n\t\tlabel=%s;\n\t\tstyle=rounded;\n\t\tcolor=%s;\n", cluster, dotLabel("pod "+podName(cs[i].Pod)), dotQuote(podColour))
		cluster++
		for ; i < len(cs) && podKey(cs[i].Pod) == k; i++ {
			fmt.Fprintf(b, "\t\t%s [label=%s, shape=box, style=rounded];\n", containerNode(cs[i]), dotLabel(containerLines(cs[i], true)...))
		}
		b.WriteString("\t}\n")
	}
	for _, r := range drawn {
		lines := []string{r.Type + ":[" + strconv.FormatUint(r.Inode, 10) + "]"}
		attrs := "shape=ellipse"
		if len(r.Containers) > 1 {
			lines = append(lines, "shared by "+strconv.Itoa(len(r.Containers)))
			attrs += ", style=filled, fillcolor=" + dotQuote(sharedFill)
		}
		if n := r.NProcs - heldPIDs(r.Containers); n > 0 {
			lines = append(lines, "+"+plural(n, "process", "processes")+" of no known container")
		}
		fmt.Fprintf(b, "\t%s [label=%s, %s];\n", nsNode(r), dotLabel(lines...), attrs)
	}
	for _, r := range drawn {
		style := ""
		if len(r.Containers) > 1 {
			style = " [penwidth=2, color=" + dotQuote(sharedEdge) + "]"
		}
		for _, h := range r.Containers {
			fmt.Fprintf(b, "\t%s -> %s%s;\n", containerNode(h.c), nsNode(r), style)
		}
	}
	b.WriteString("}\n")
	return b.Flush()
}

func containerNode(c *event.Container) string { return dotQuote("c:" + c.ID) }

func nsNode(r nsRow) string { return dotQuote("ns:" + strconv.FormatUint(r.Inode, 10)) }

// containerLines label a container: its name (inside its pod's cluster,
// its name in the pod), then its runtime and image.
func containerLines(c *event.Container, inCluster bool) []string {
	name := c.Short()
	if inCluster {
		name = inPod(c)
	}
	return []string{name, strings.TrimSpace(c.Runtime + " " + c.Image)}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// dotLabel is a quoted DOT label of lines, each escaped for the
// terminal first (control characters, invalid UTF-8), then for DOT.
func dotLabel(lines ...string) string {
	var parts []string
	for _, l := range lines {
		if l != "" {
			parts = append(parts, dotEscape(escape(l)))
		}
	}
	return `"` + strings.Join(parts, `\n`) + `"`
}

// dotQuote is s as a quoted DOT ID.
func dotQuote(s string) string { return `"` + dotEscape(escape(s)) + `"` }

// dotEscape makes s safe inside a DOT quoted string: a backslash would
// start one of Graphviz's label escapes (\n, \N, \G …), a quote would end
// the string.
func dotEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
}
