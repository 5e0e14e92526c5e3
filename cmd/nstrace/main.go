// SPDX-License-Identifier: Apache-2.0

// Command nstrace shows, live, how processes are born, run, change
// namespaces and die, each event decorated with the process's namespaces.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/nsinfo"
	"github.com/nstrace/nstrace/internal/probe"
)

// options is everything the command line chose.
type options struct {
	kinds      event.KindSet
	json       bool
	allNS      bool
	nsChanges  bool
	bufferSize int
	debug      bool
	readyFD    int
	output     string

	// Scope.
	pids       []uint32
	follow     bool
	ns         []nsSpec
	containers []string
	comms      []string
	host       bool
	noHost     bool
	command    []string
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

const usageHead = `Usage: nstrace [flags] [-- COMMAND [ARG...]]
       nstrace ns [--json] [INODE | TYPE:INODE | -p PID]

Show process fork, exec and exit, and namespace changes (clone, unshare,
setns), live, each with the process's namespaces. With a COMMAND, run it
and show only it and its descendants; exit with its status.

Flags:
`

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := pflag.NewFlagSet("nstrace", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	events := fs.StringP("events", "e", "all", "events to show, comma-separated: fork, exec, exit, clone, unshare, setns, all")
	setns := fs.Bool("setns", false, "show setns calls (adds setns to -e)")
	unshare := fs.Bool("unshare", false, "show unshare calls (adds unshare to -e)")
	fs.BoolVar(&o.nsChanges, "ns-changes", false, "only events that move a process into other namespaces")
	pids := fs.StringSliceP("pid", "p", nil, "only these processes (PID[,PID...])")
	fs.BoolVarP(&o.follow, "follow", "f", false, "with --pid: also their descendants born from now on")
	nsList := fs.StringArray("ns", nil, "only processes in this namespace: INODE, TYPE:INODE, pid:PID or TYPE:pid:PID (repeatable)")
	fs.StringArrayVar(&o.containers, "container", nil, "only processes of this container: id, id prefix or runc name (repeatable)")
	fs.StringArrayVar(&o.comms, "comm", nil, "only processes with this command name (repeatable)")
	fs.BoolVar(&o.host, "host", false, "only processes in the host's namespaces (nstrace's own)")
	fs.BoolVar(&o.noHost, "no-host", false, "only processes in some namespace other than the host's")
	fs.BoolVar(&o.json, "json", false, "one JSON object per line")
	fs.StringVarP(&o.output, "output", "o", "", "write the feed to this file instead of stdout")
	fs.BoolVar(&o.allNS, "all-ns", false, "show every namespace, not only those that differ from the host's")
	bufSize := fs.String("buffer-size", strconv.Itoa(probe.DefaultBufferSize>>20)+"M", "ring buffer size (power of two; K, M, G suffixes)")
	fs.BoolVar(&o.debug, "debug", false, "print the full verifier log if the programs are rejected")
	fs.IntVar(&o.readyFD, "ready-fd", -1, "write a byte to this fd once attached")
	_ = fs.MarkHidden("ready-fd")
	help := fs.BoolP("help", "h", false, "show this help")

	if err := fs.Parse(args); err != nil {
		return o, usageError{err}
	}
	if *help {
		fmt.Fprint(stderr, usageHead, fs.FlagUsages())
		return o, errHelp
	}
	if dash := fs.ArgsLenAtDash(); dash >= 0 {
		if dash > 0 {
			return o, usagef("unexpected argument %q (a command goes after --)", fs.Arg(0))
		}
		o.command = fs.Args()
		if len(o.command) == 0 {
			return o, usagef("no command after --")
		}
	} else if fs.NArg() > 0 {
		return o, usagef("unexpected argument %q (a command goes after --)", fs.Arg(0))
	}
	for _, p := range *pids {
		n, err := strconv.ParseUint(strings.TrimSpace(p), 10, 32)
		if err != nil || n == 0 || n > maxPID {
			return o, usagef("--pid: %q is not a process id", p)
		}
		o.pids = append(o.pids, uint32(n))
	}
	if o.follow && len(o.pids) == 0 {
		return o, usagef("--follow needs --pid")
	}
	if len(o.pids) > 0 && len(o.command) > 0 {
		return o, usagef("--pid and a command do not go together")
	}
	if o.host && o.noHost {
		return o, usagef("--host and --no-host do not go together")
	}
	for _, spec := range *nsList {
		n, err := parseNSSpec(spec)
		if err != nil {
			return o, usagef("--ns: %v", err)
		}
		o.ns = append(o.ns, n)
	}
	var err error
	if fs.Changed("events") || !(*setns || *unshare) {
		o.kinds, err = event.ParseKinds(*events)
		if err != nil {
			return o, usageError{err}
		}
	}
	if *setns {
		o.kinds = o.kinds.Add(event.Setns)
	}
	if *unshare {
		o.kinds = o.kinds.Add(event.Unshare)
	}
	o.bufferSize, err = parseSize(*bufSize)
	if err != nil {
		return o, usagef("--buffer-size: %v", err)
	}
	if err := probe.ValidBufferSize(o.bufferSize); err != nil {
		return o, usagef("--buffer-size: %v", err)
	}
	return o, nil
}

var errHelp = errors.New("help")

// parseSize reads "8M", "64K", "1G" or a plain number of bytes.
func parseSize(s string) (int, error) {
	mult := 1
	switch {
	case strings.HasSuffix(s, "K"), strings.HasSuffix(s, "k"):
		mult = 1 << 10
	case strings.HasSuffix(s, "M"), strings.HasSuffix(s, "m"):
		mult = 1 << 20
	case strings.HasSuffix(s, "G"), strings.HasSuffix(s, "g"):
		mult = 1 << 30
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 || n > (1<<31)/mult {
		return 0, fmt.Errorf("%q is not a size (try 8M)", s)
	}
	return n * mult, nil
}

func main() {
	// A tracer should stay out of the way of what it traces: one P keeps
	// the Go scheduler from spinning threads on every wake-up, and one
	// core keeps up with hundreds of thousands of events a second.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	os.Exit(mainExit(os.Args[1:], os.Stdout, os.Stderr))
}

func mainExit(args []string, stdout, stderr io.Writer) (code int) {
	// A bug must still end in one line, not a stack trace.
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "nstrace: internal error: %v (please report it)\n", r)
			code = 1
		}
	}()
	if os.Getenv(gateEnv) == "1" {
		return gate(args)
	}
	if len(args) > 0 && args[0] == "ns" {
		return nsMain(args[1:], stdout, stderr, nsinfo.ProcRoot)
	}
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "nstrace: %v\nRun 'nstrace --help' for usage.\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A closed pipe shows up as EPIPE from write, handled in run, rather
	// than killing nstrace before it detaches.
	signal.Ignore(syscall.SIGPIPE)

	code, err = run(ctx, opts, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "nstrace: %v\n", err)
		return 1
	}
	return code
}
