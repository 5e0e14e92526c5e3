// SPDX-License-Identifier: Apache-2.0

// Command nstrace shows, live, how processes are born, run, change
// namespaces and die, each event decorated with the process's namespaces.
//
// This file turns flags into a tracer.Config, handles signals and exit
// codes; everything else lives under internal/.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/launch"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/nslist"
	"github.com/nstrace/nstrace/internal/probe"
	"github.com/nstrace/nstrace/internal/procfs"
	"github.com/nstrace/nstrace/internal/scope"
	"github.com/nstrace/nstrace/internal/tracer"
	"github.com/nstrace/nstrace/internal/version"
)

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

var errHelp = errors.New("help")

const usageHead = `Usage: nstrace [flags] [-- COMMAND [ARG...]]
       nstrace ns [--json] [-t TYPE] [--tree | --members | --dot] [INODE | TYPE:INODE | -p PID]

Show process fork, exec and exit, and namespace changes (clone, unshare,
setns), live, each with the process's namespaces. With a COMMAND, run it
and show only it and its descendants; exit with its status.

Flags:
`

// traceArgs are the trace command's flags that need more than a Config
// field: parseFlags checks and converts them.
type traceArgs struct {
	events, bufSize, hooks, limits *string
	setns, unshare                 *bool
	pids, nsList                   *[]string
	duration                       *float64
	showVersion, help, man         *bool
}

// traceFlags defines the trace command's flags, parsing into cfg. It is
// the one definition --help and the man page are made from.
func traceFlags(cfg *tracer.Config) (*pflag.FlagSet, traceArgs) {
	sc := &cfg.Scope
	var a traceArgs
	fs := pflag.NewFlagSet("nstrace", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	a.events = fs.StringP("events", "e", "", "events to show, comma-separated: fork, exec, exit, clone, unshare, setns, comm, uid, sid, ptrace, core, nonzeroexit, all (default fork,exec,exit,clone,unshare,setns)")
	a.setns = fs.Bool("setns", false, "show setns calls (adds setns to -e)")
	a.unshare = fs.Bool("unshare", false, "show unshare calls (adds unshare to -e)")
	fs.BoolVarP(&cfg.Failed, "failed", "x", false, "also show execs that failed, with the file tried and the errno")
	fs.BoolVar(&cfg.Ancestors, "ancestors", false, "show each process's parents, up to 8, read in the kernel at the event")
	fs.BoolVar(&sc.NSChanges, "ns-changes", false, "only events that move a process into other namespaces")
	a.pids = fs.StringSliceP("pid", "p", nil, "only these processes (PID[,PID...])")
	fs.BoolVarP(&sc.Follow, "follow", "f", false, "with --pid: also their descendants born from now on")
	a.nsList = fs.StringArray("ns", nil, "only processes in this namespace: INODE, TYPE:INODE, pid:PID or TYPE:pid:PID (repeatable)")
	fs.StringArrayVar(&sc.Containers, "container", nil, "only processes of this container: name, id or hex id prefix, any runtime (repeatable)")
	fs.StringArrayVar(&sc.Comms, "comm", nil, "only processes with this command name (repeatable)")
	fs.BoolVar(&sc.OnlyHost, "host", false, "only processes in the host's namespaces (the kernel's first task's)")
	fs.BoolVar(&sc.NotHost, "no-host", false, "only processes in some namespace other than the host's")
	fs.BoolVar(&cfg.JSON, "json", false, "one JSON object per line")
	a.duration = fs.Float64P("duration", "D", 0, "stop after this many seconds")
	fs.BoolVarP(&cfg.Stats, "stats", "S", false, "at the end, print event counts and mean lifetime per command name")
	fs.BoolVarP(&cfg.Quiet, "quiet", "q", false, "print no events: only the summary (and -S's table)")
	fs.StringVarP(&cfg.Output, "output", "o", "", "write the feed to this file instead of stdout")
	fs.BoolVar(&cfg.AllNS, "all-ns", false, "show every namespace, not only those that differ from the host's")
	a.bufSize = fs.String("buffer-size", strconv.Itoa(probe.DefaultBufferSize>>20)+"M", "ring buffer size (power of two; K, M, G suffixes)")
	a.hooks = fs.String("syscall-hooks", "auto", "how to catch clone, unshare and setns: auto, fentry (kernel functions) or tracepoint (raw syscall tracepoints)")
	fs.BoolVar(&cfg.Debug, "debug", false, "say which hooks are in use; print the full verifier log if the programs are rejected")
	a.limits = fs.String("limits", "", "kernel table sizes: tracked=N,pending=N,clone=N")
	_ = fs.MarkHidden("limits")
	fs.IntVar(&cfg.ReadyFD, "ready-fd", -1, "write a newline to this fd once events flow, and close it")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (host:port) at /metrics")
	a.showVersion = fs.Bool("version", false, "print the version, commit, Go and cilium/ebpf versions, BPF object hash")
	a.help = fs.BoolP("help", "h", false, "show this help")
	a.man = fs.Bool("man", false, "print the man page, nstrace(1), in roff")
	_ = fs.MarkHidden("man")
	return fs, a
}

func parseFlags(args []string, stdout, stderr io.Writer) (tracer.Config, error) {
	cfg := tracer.Config{ReadyFD: -1}
	sc := &cfg.Scope
	fs, a := traceFlags(&cfg)
	if err := fs.Parse(args); err != nil {
		return cfg, usageError{err}
	}
	if *a.help {
		fmt.Fprint(stderr, usageHead, fs.FlagUsages())
		return cfg, errHelp
	}
	if (*a.man || *a.showVersion) && fs.NArg() > 0 {
		return cfg, usagef("unexpected argument %q", fs.Arg(0))
	}
	if *a.man {
		writeMan(stdout)
		return cfg, errHelp
	}
	if *a.showVersion {
		i := version.Get(probe.ObjectSHA256())
		fmt.Fprintf(stdout, "nstrace %s\ncommit %s\n%s\ncilium/ebpf %s\nBPF object sha256 %s\n", i.Version, i.Commit, i.Go, i.Ebpf, i.BPFObject)
		return cfg, errHelp
	}
	if dash := fs.ArgsLenAtDash(); dash >= 0 {
		if dash > 0 {
			return cfg, usagef("unexpected argument %q (a command goes after --)", fs.Arg(0))
		}
		cfg.Command = fs.Args()
		if len(cfg.Command) == 0 {
			return cfg, usagef("no command after --")
		}
	} else if fs.NArg() > 0 {
		return cfg, usagef("unexpected argument %q (a command goes after --)", fs.Arg(0))
	}
	var err error
	if sc.PIDs, err = scope.ParsePIDs(*a.pids); err != nil {
		return cfg, usagef("--pid: %v", err)
	}
	if sc.Follow && len(sc.PIDs) == 0 {
		return cfg, usagef("--follow needs --pid")
	}
	if len(sc.PIDs) > 0 && len(cfg.Command) > 0 {
		return cfg, usagef("--pid and a command do not go together")
	}
	if sc.OnlyHost && sc.NotHost {
		return cfg, usagef("--host and --no-host do not go together")
	}
	for _, spec := range *a.nsList {
		n, err := scope.ParseNSSpec(spec)
		if err != nil {
			return cfg, usagef("--ns: %v", err)
		}
		sc.NS = append(sc.NS, n)
	}
	switch {
	case fs.Changed("events"):
		if cfg.Kinds, err = event.ParseKinds(*a.events); err != nil {
			return cfg, usageError{err}
		}
	case !(*a.setns || *a.unshare):
		cfg.Kinds = event.DefaultKinds()
	}
	if *a.setns {
		cfg.Kinds = cfg.Kinds.Add(event.Setns)
	}
	if *a.duration < 0 {
		return cfg, usagef("--duration: %v is not a number of seconds", *a.duration)
	}
	cfg.Duration = time.Duration(*a.duration * float64(time.Second))
	if cfg.Failed {
		// Failed execs are exec events: -x asks for them.
		cfg.Kinds = cfg.Kinds.Add(event.Exec)
	}
	if *a.unshare {
		cfg.Kinds = cfg.Kinds.Add(event.Unshare)
	}
	switch h := probe.Hooks(*a.hooks); h {
	case "auto":
	case probe.HooksFentry, probe.HooksTracepoint:
		cfg.Hooks = h
	default:
		return cfg, usagef("--syscall-hooks: %q is not auto, fentry or tracepoint", *a.hooks)
	}
	if cfg.Limits, err = parseLimits(*a.limits); err != nil {
		return cfg, usagef("--limits: %v", err)
	}
	if cfg.BufferSize, err = parseSize(*a.bufSize); err != nil {
		return cfg, usagef("--buffer-size: %v", err)
	}
	if err := probe.ValidBufferSize(cfg.BufferSize); err != nil {
		return cfg, usagef("--buffer-size: %v", err)
	}
	return cfg, nil
}

// parseLimits reads tracked=N,pending=N,clone=N.
func parseLimits(s string) (probe.Limits, error) {
	var l probe.Limits
	if s == "" {
		return l, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return l, fmt.Errorf("%q: want NAME=N, N > 0", kv)
		}
		switch k {
		case "tracked":
			l.Tracked = n
		case "pending":
			l.Pending = n
		case "clone":
			l.CloneFlags = n
		default:
			return l, fmt.Errorf("%q: unknown table (tracked, pending, clone)", k)
		}
	}
	return l, nil
}

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

const nsUsage = `Usage: nstrace ns [--json] [-t TYPE]    every namespace and who is in it
       nstrace ns --tree[=owner|parent] [-t TYPE]   the same as a tree
       nstrace ns --members [--json] [-t TYPE]      each namespace's processes and containers
       nstrace ns --dot [-t TYPE]             containers and the namespaces they hold, for Graphviz
       nstrace ns [--json] INODE|TYPE:INODE   the processes in one namespace
       nstrace ns [--json] -p PID             the namespaces of one process

Flags:
`

// nsFlags defines the ns subcommand's flags, parsing into q: the one
// definition for its --help and the man page. typ and help are the flags
// that need more than a Query field.
func nsFlags(q *nslist.Query) (fs *pflag.FlagSet, typ *string, help *bool) {
	fs = pflag.NewFlagSet("nstrace ns", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&q.JSON, "json", false, "one JSON object per line")
	fs.Uint32VarP(&q.PID, "pid", "p", 0, "the namespaces of this process")
	typ = fs.StringP("type", "t", "", "only namespaces of this type ("+ns.ListedNames+")")
	fs.StringVarP(&q.Tree, "tree", "T", "", "draw a tree: owner (each under the user namespace owning it) or parent (pid and user nesting)")
	fs.Lookup("tree").NoOptDefVal = "owner"
	fs.BoolVar(&q.Members, "members", false, "list every process in each namespace and the containers they belong to")
	fs.BoolVar(&q.Dot, "dot", false, "draw the containers and the namespaces they hold (shared ones shared) as a Graphviz graph")
	help = fs.BoolP("help", "h", false, "show this help")
	return fs, typ, help
}

// parseNSFlags reads the ns subcommand's flags.
func parseNSFlags(args []string, stderr io.Writer) (nslist.Query, error) {
	var q nslist.Query
	fs, typ, help := nsFlags(&q)
	if err := fs.Parse(args); err != nil {
		return q, usageError{err}
	}
	if *typ != "" {
		t, ok := ns.Parse(*typ)
		if !ok || !slices.Contains(ns.Listed, t) {
			return q, usagef("-t: %q is not a namespace type (%s)", *typ, ns.ListedNames)
		}
		q.OnlyType, q.ListType = true, t
	}
	switch q.Tree {
	case "", "owner", "parent":
	default:
		return q, usagef("--tree: %q is not owner or parent", q.Tree)
	}
	if q.Tree != "" && (q.JSON || fs.NArg() > 0 || fs.Changed("pid")) {
		return q, usagef("--tree draws the full listing, without --json, -p or a namespace")
	}
	if q.Dot && (q.JSON || q.Tree != "" || q.Members || fs.NArg() > 0 || fs.Changed("pid")) {
		return q, usagef("--dot draws the full listing, without --json, --tree, --members, -p or a namespace")
	}
	if q.Members && (q.Tree != "" || fs.NArg() > 0 || fs.Changed("pid")) {
		return q, usagef("--members lists every namespace, without --tree, -p or a namespace")
	}
	if q.OnlyType && (fs.NArg() > 0 || fs.Changed("pid")) {
		return q, usagef("-t limits the full listing, not -p or a namespace")
	}
	if *help {
		fmt.Fprint(stderr, nsUsage, fs.FlagUsages())
		return q, errHelp
	}
	if fs.NArg() > 1 || (fs.NArg() == 1 && fs.Changed("pid")) {
		return q, usagef("give one namespace, or -p PID")
	}
	if fs.Changed("pid") && q.PID == 0 {
		return q, usagef("-p: 0 is not a process id")
	}
	if fs.NArg() == 1 {
		spec, err := scope.ParseNSSpec(fs.Arg(0))
		if err != nil || spec.PID != 0 {
			return q, usagef("want INODE or TYPE:INODE, got %q", fs.Arg(0))
		}
		q.Inode, q.Type, q.AnyType = spec.Inode, spec.Type, spec.AnyType
	}
	return q, nil
}

func nsMain(args []string, stdout, stderr io.Writer) int {
	q, err := parseNSFlags(args, stderr)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "nstrace ns: %v\nRun 'nstrace ns --help' for usage.\n", err)
		return 2
	}
	// The host's namespaces from the kernel where nstrace may ask it,
	// else nstrace's own.
	host, err := probe.HostNamespaces()
	if err != nil {
		host, _ = procfs.ReadNS(procfs.Root, "self")
	}
	if err := tracer.CheckHostPID(host); err != nil {
		fmt.Fprintf(stderr, "nstrace ns: %v\n", err)
		return 1
	}
	if err := nslist.Run(procfs.Root, host, q, stdout); err != nil {
		fmt.Fprintf(stderr, "nstrace ns: %v\n", err)
		return 1
	}
	return 0
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
	if os.Getenv(launch.GateEnv) == "1" {
		return launch.Gate(args)
	}
	if len(args) > 0 && args[0] == "ns" {
		return nsMain(args[1:], stdout, stderr)
	}
	cfg, err := parseFlags(args, stdout, stderr)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "nstrace: %v\nRun 'nstrace --help' for usage.\n", err)
		return 2
	}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(signals)
	// A closed pipe shows up as EPIPE from write, handled by the tracer,
	// rather than killing nstrace before it detaches.
	signal.Ignore(syscall.SIGPIPE)

	code, err = run(signals, cfg, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "nstrace: %v\n", err)
		return 1
	}
	return code
}

func run(signals <-chan os.Signal, cfg tracer.Config, stdout, stderr io.Writer) (int, error) {
	s, err := tracer.New(cfg, stdout, stderr)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	return s.Run(signals)
}
