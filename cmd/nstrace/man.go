// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/nstrace/nstrace/internal/nslist"
	"github.com/nstrace/nstrace/internal/probe"
	"github.com/nstrace/nstrace/internal/tracer"
	"github.com/nstrace/nstrace/internal/version"
)

// writeMan writes nstrace(1) in roff, its options from the same flag
// definitions --help prints, so the two cannot drift apart.
func writeMan(w io.Writer) {
	var cfg tracer.Config
	trace, _ := traceFlags(&cfg)
	var q nslist.Query
	nsfs, _, _ := nsFlags(&q)
	v := version.Get(probe.ObjectSHA256()).Version
	fmt.Fprintf(w, `.TH NSTRACE 1 "" "nstrace %s" "User Commands"
.SH NAME
nstrace \- show process fork, exec, exit and namespace changes, live
.SH SYNOPSIS
.B nstrace
.RI [ flags ]
.RB [ \-\- 
.IR COMMAND " [" ARG ...]]
.br
.B nstrace ns
.RB [ \-\-json ]
.RB [ \-t
.IR TYPE ]
.RB [ \-\-tree " | " \-\-members " | " \-\-dot ]
.RI [ INODE " | " TYPE : INODE " | "
.BI \-p " PID" \fR]
.SH DESCRIPTION
.B nstrace
shows, live, how processes are born, run, change namespaces and die:
fork, exec and exit, and the namespace changes clone, unshare and setns,
each with the process's namespace inodes, its PID on the host and in its
own pid namespace, its cgroup and its container.
With a
.IR COMMAND ,
it runs the command, shows only it and its descendants, and exits with
its status.
The feed is aligned columns, or one JSON object per line with
.BR \-\-json .
.PP
It needs Linux 5.8 or newer with BTF, and root or CAP_BPF and
CAP_PERFMON, in the host's pid namespace.
.SH OPTIONS
`, roffEscape(v))
	writeManFlags(w, trace)
	fmt.Fprint(w, `.SH NSTRACE NS
.B nstrace ns
lists namespaces like
.BR lsns (8):
every namespace, with its processes, user, parent and owner, the
containers in it (a pod's once), whether it is the host's, and the bind
mounts and open fds that hold it; with
.BR \-\-members ,
every PID in each namespace, by container; with
.BR \-\-dot ,
a Graphviz graph of the containers and the namespaces they share; with
.I INODE
or
.IR TYPE : INODE ,
the processes in one namespace; with
.BI \-p " PID" ,
the namespaces of one process.
.SS Options
`)
	writeManFlags(w, nsfs)
	fmt.Fprint(w, `.SH EXIT STATUS
0 when stopped by SIGINT or SIGTERM or at the end of
.BR \-\-duration ;
with a
.IR COMMAND ,
its exit status (128+N for signal N).
1 when nstrace could not trace (permissions, kernel, a bad process or
container), 2 for a usage error.
Errors are one line on standard error, starting
.RB \(lq nstrace: \(rq.
.SH SIGNALS
SIGINT and SIGTERM write what the kernel has queued, print a summary on
standard error and exit; with a
.IR COMMAND ,
the first goes to it and a second stops nstrace at once.
SIGHUP reopens
.B \-o
.IR FILE .
.SH EXAMPLES
.EX
sudo nstrace \-e exec \-\- runc run mybox
sudo nstrace \-\-setns
sudo nstrace \-\-json | jq 'select(.container)'
sudo nstrace ns \-p 4242
sudo nstrace ns \-\-dot | dot \-Tsvg > ns.svg
.EE
.SH SEE ALSO
.BR dot (1),
.BR forkstat (8),
.BR lsns (8),
.BR nsenter (1),
.BR unshare (1),
.BR namespaces (7).
The documentation in the source tree,
.IR docs/ ,
describes every event kind, JSON key and message.
`)
}

// writeManFlags writes one .TP entry per visible flag, as FlagUsages
// names it: short and long name, value name, usage, default.
func writeManFlags(w io.Writer, fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		name := `\fB\-\-` + roffEscape(f.Name) + `\fR`
		if f.Shorthand != "" {
			name = `\fB\-` + roffEscape(f.Shorthand) + `\fR, ` + name
		}
		varname, usage := pflag.UnquoteUsage(f)
		switch {
		case varname != "" && f.NoOptDefVal != "":
			name += `[=\fI` + roffEscape(varname) + `\fR]`
		case varname != "":
			name += ` \fI` + roffEscape(varname) + `\fR`
		}
		if def := f.DefValue; def != "" && def != "false" && def != "0" && def != "[]" {
			usage += " (default " + def + ")"
		}
		fmt.Fprintf(w, ".TP\n%s\n%s\n", name, roffText(usage))
	})
}

// roffEscape makes s safe inside a roff line: backslashes and hyphens.
func roffEscape(s string) string {
	return strings.NewReplacer(`\`, `\e`, `-`, `\-`).Replace(s)
}

// roffText is roffEscape for a text line, which must not start with a
// control character.
func roffText(s string) string {
	s = roffEscape(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
