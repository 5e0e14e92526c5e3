// SPDX-License-Identifier: Apache-2.0

// Package tracer is an nstrace session: it opens the probe for what the
// user chose, reads the kernel's records, filters and decorates them,
// writes them out, and accounts for every event the kernel could not
// deliver.
package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/launch"
	"github.com/nstrace/nstrace/internal/metrics"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/output"
	"github.com/nstrace/nstrace/internal/probe"
	"github.com/nstrace/nstrace/internal/procfs"
	"github.com/nstrace/nstrace/internal/scope"
	"github.com/nstrace/nstrace/internal/version"
)

// Config is what the command line chose.
type Config struct {
	Kinds      event.KindSet
	JSON       bool
	AllNS      bool
	BufferSize int
	Debug      bool
	// Hooks chooses how namespace system calls are caught.
	Hooks probe.Hooks
	// Limits override the kernel side's table sizes (tests).
	Limits probe.Limits
	// Output is a file to write the feed to; "" is stdout.
	Output string
	Scope  scope.Scope
	// Command, if set, is run traced; the session ends when its tree is
	// gone and returns its exit status.
	Command []string
	// ReadyFD, if not negative, gets a byte once the programs are attached.
	ReadyFD int
	// MetricsAddr, if set, serves Prometheus metrics there.
	MetricsAddr string
	// Failed also reports execs that failed; Ancestors gives every event
	// its process's parents.
	Failed, Ancestors bool
	// Duration, if set, ends the session after that long.
	Duration time.Duration
	// Stats prints per command counts at the end; Quiet writes no feed.
	Stats, Quiet bool
}

// writer is the human or JSON view.
type writer interface {
	Write(*event.Event) error
}

// batchRest is the longest the reader rests after a batch before it
// looks for the next: the longest an event waits to be written while
// events keep coming (less when they come fast enough to fill a quarter
// of the ring buffer sooner). Each rest ends in a wake-up, which costs
// more than the events of a batch at everyday rates; 25 ms is well under
// what a person watching the feed notices. An idle reader is woken by the
// first event at once.
const batchRest = 25 * time.Millisecond

// stopGrace is how long a stopping nstrace still tries to write what is
// queued to a reader that does not read.
const stopGrace = 500 * time.Millisecond

// Why the session ends, set by the control goroutine.
const (
	running int32 = iota
	stopSignal
	stopCommandDone
	stopAbort
	stopOutputGone
)

// Session is one run of the tracer.
type Session struct {
	cfg    Config
	stdout io.Writer
	stderr io.Writer
	// stderrMu keeps the summary whole: a warning may come from another
	// goroutine.
	stderrMu sync.Mutex

	probe      *probe.Probe
	host       ns.Set
	filter     *scope.UserFilter
	hier       procfs.Hierarchies
	cgroups    *procfs.Cgroups // paths of v2 ids
	cgroupsV1  *procfs.Cgroups // paths of ids in hier's v1 hierarchy
	containers *container.Registry
	owners     *owners
	closers    []func()

	sink *sink
	buf  *bufio.Writer
	w    writer

	cmd *launch.Command

	stop     atomic.Int32
	exitCode atomic.Int32
	reopen   atomic.Bool

	seen       uint64
	badRecords atomic.Uint64
	reported   probe.Losses // losses already written to the feed
	metrics    *metrics.Metrics
	stats      *stats
}

// New opens the probe and the output for cfg. The session's Close must be
// called.
func New(cfg Config, stdout, stderr io.Writer) (_ *Session, err error) {
	s := &Session{cfg: cfg, stdout: stdout, stderr: stderr}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// The host's namespaces are the kernel's first task's, wherever
	// nstrace runs (a container has namespaces of its own); nstrace's own
	// serve where the kernel does not say.
	host, err := probe.HostNamespaces()
	if err != nil {
		if host, err = procfs.ReadNS(procfs.Root, "self"); err != nil {
			return nil, fmt.Errorf("reading nstrace's own namespaces: %w", err)
		}
	}
	s.host = host
	if err := CheckHostPID(host); err != nil {
		return nil, err
	}
	// Which hierarchies identify a process: where it is in the cgroup v2
	// root, a v1 hierarchy does, if one is mounted.
	s.hier = procfs.FindHierarchies(procfs.Root+"/self/mountinfo", procfs.CgroupV1Controllers)
	roots := container.DefaultRoots
	roots.Cgroups = s.hier
	s.containers = container.NewRegistry(roots, true)
	s.closers = append(s.closers, s.containers.Close)
	cfg.Scope.Command = len(cfg.Command) > 0
	filter, err := cfg.Scope.KernelFilter(procfs.Root, host, s.containers)
	if err != nil {
		return nil, err
	}
	s.probe, err = probe.Open(probe.Options{
		Kinds: cfg.Kinds, BufferSize: cfg.BufferSize, Debug: cfg.Debug,
		Filter: filter, Hooks: cfg.Hooks, Limits: cfg.Limits,
		Failed: cfg.Failed, Ancestors: cfg.Ancestors, CgroupV1: s.hier.Controller, CgroupV1Hierarchy: s.hier.ID,
	})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.probe.Close() })
	s.filter = cfg.Scope.UserFilter(s.host)
	if missing := probe.MissingRecommended(); len(missing) > 0 {
		fmt.Fprintf(stderr, "nstrace: without %s\n", strings.Join(missing, "; without "))
	}
	if cfg.Debug {
		hooks, why := s.probe.Hooks()
		fmt.Fprintf(stderr, "nstrace: namespace system calls: %s (%s); exits: %s\n", hooks, why, s.probe.ExitHook())
		fmt.Fprintf(stderr, "nstrace: container identity: %s\n", identitySource(s.hier))
	}
	if len(filter.Cgroups) > 0 || len(filter.CgroupsV1) > 0 {
		// The kernel filters on the cgroups of the containers --container
		// names now; those that come to answer to it later join them.
		f := cfg.Scope.CgroupFollower(s.probe.FilterCgroup, func(err error) {
			s.stderrMu.Lock()
			defer s.stderrMu.Unlock()
			fmt.Fprintf(s.stderr, "nstrace: %v\n", err)
		})
		s.containers.OnContainer(f.Learn)
		s.closers = append(s.closers, f.Stop)
	}

	if cfg.Stats {
		s.stats = newStats()
	}
	if cfg.Quiet {
		stdout = io.Discard
	}
	s.sink, err = openSink(cfg.Output, stdout)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.sink.Close() })

	s.cgroups = procfs.NewCgroups(s.hier.V2)
	s.closers = append(s.closers, s.cgroups.Close)
	if s.hier.V1 != "" {
		s.cgroupsV1 = procfs.NewCgroups(s.hier.V1)
		s.closers = append(s.closers, s.cgroupsV1.Close)
	}
	s.owners = newOwners(procfs.Root, s.host, s.containers, s.hier)

	if cfg.MetricsAddr != "" {
		s.metrics = metrics.New(source{s}, version.Get(probe.ObjectSHA256()))
		ln, err := s.metrics.Serve(cfg.MetricsAddr)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, func() { ln.Close() })
	}

	s.buf = bufio.NewWriterSize(s.sink, 64<<10)
	if cfg.JSON {
		s.w = output.NewJSON(s.buf)
	} else {
		h := output.NewHuman(s.buf, s.host, cfg.AllNS)
		if s.containers.Any() || len(cfg.Scope.Containers) > 0 {
			h.ShowContainers()
		}
		if err := h.WriteHeader(); err != nil {
			return nil, quiet(err)
		}
		s.w = h
	}
	if err := s.buf.Flush(); err != nil {
		return nil, quiet(err)
	}
	return s, nil
}

// Close releases everything the session holds.
func (s *Session) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// Run traces until a signal, the end of the output's reader, or the end of
// COMMAND's tree, and returns the exit status: COMMAND's, 128+N if a
// second signal N stopped nstrace before COMMAND was done, or 0.
//
// Without COMMAND, SIGINT or SIGTERM ends the session once what the
// kernel has queued is written. With COMMAND, the first one goes to
// COMMAND, as a terminal's would, and the session goes on until its tree
// is gone; a second one ends it as without COMMAND. SIGHUP reopens -o
// FILE.
func (s *Session) Run(signals <-chan os.Signal) (int, error) {
	if err := s.startCommand(); err != nil {
		return 0, err
	}
	s.signalReady()
	go s.control(signals)
	if s.sink.watch >= 0 {
		go func() {
			if s.sink.waitGone() {
				s.stopWith(stopOutputGone)
			}
		}()
	}

	var e event.Event
	for {
		// Sleep until the kernel side has something; then read batches
		// until it has nothing more.
		err := s.probe.Read(&e)
		for err == nil {
			if err := s.handle(&e); err != nil {
				return s.writeFailed(err)
			}
			if err = s.probe.Next(&e); err == probe.ErrEmpty {
				if err := s.endBatch(); err != nil {
					return s.writeFailed(err)
				}
				// Let records gather before looking again: the reader is
				// not woken while it rests, and a wake-up costs the
				// traced process an interrupt.
				if err := s.probe.Rest(batchRest); err != nil {
					return 0, fmt.Errorf("resting between batches: %w", err)
				}
				err = s.probe.Next(&e)
			}
		}
		switch {
		case errors.Is(err, probe.ErrEmpty):
		case errors.Is(err, probe.ErrFlushed), errors.Is(err, probe.ErrClosed):
			return s.end()
		case errors.Is(err, probe.ErrShortRecord), errors.Is(err, probe.ErrUnknownKind):
			s.badRecords.Add(1)
		default:
			return 0, fmt.Errorf("reading events: %w", err)
		}
	}
}

// control turns signals, COMMAND's end and a reader that left into the
// session's end: it flushes the probe, whose Read then returns what is
// queued and ErrFlushed.
func (s *Session) control(signals <-chan os.Signal) {
	var done <-chan int
	if s.cmd != nil {
		done = s.cmd.Done()
	}
	var timeout <-chan time.Time
	if s.cfg.Duration > 0 {
		timeout = time.After(s.cfg.Duration)
	}
	signalled := 0
	for {
		select {
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				s.reopen.Store(true)
				continue
			}
			signalled++
			switch {
			case s.cmd != nil && signalled == 1:
				s.forward(sig)
			case s.cmd != nil:
				if n, ok := sig.(syscall.Signal); ok {
					s.exitCode.Store(128 + int32(n))
				}
				s.stopWith(stopAbort)
				return
			default:
				s.stopWith(stopSignal)
				return
			}
		case code := <-done:
			s.exitCode.Store(int32(code))
			s.stopWith(stopCommandDone)
			return
		case <-timeout:
			s.stopWith(stopSignal)
			return
		}
	}
}

// stopWith ends the session for reason: what is queued is still read,
// and a write that blocks is cut short after a grace period.
func (s *Session) stopWith(reason int32) {
	if !s.stop.CompareAndSwap(running, reason) {
		return
	}
	if reason == stopOutputGone {
		_ = s.probe.Interrupt()
		return
	}
	s.sink.cutShort(stopGrace)
	_ = s.probe.Flush()
}

// forward gives COMMAND the signal nstrace received, unless nstrace is
// the terminal's foreground process group, whose every member (COMMAND
// included) the terminal signalled itself.
func (s *Session) forward(sig os.Signal) {
	for _, fd := range []int{0, 1, 2} {
		if pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP); err == nil && pgrp == unix.Getpgrp() {
			return
		}
	}
	if n, ok := sig.(syscall.Signal); ok {
		_ = unix.Kill(s.cmd.PID, n)
	}
}

// startCommand starts COMMAND held at its gate, traces it, and lets it go.
func (s *Session) startCommand() error {
	if len(s.cfg.Command) == 0 {
		return nil
	}
	cmd, err := launch.Start(s.cfg.Command)
	if err != nil {
		return err
	}
	s.cmd = cmd
	s.closers = append(s.closers, cmd.Abort)
	if err := s.probe.Track(uint32(cmd.PID)); err != nil {
		return err
	}
	// A COMMAND that died at the gate (a Ctrl-C that came first) cannot
	// be released: its end, and status, come through Done like any other.
	if err := cmd.Release(); err != nil && !errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("starting %s: %w", s.cfg.Command[0], err)
	}
	return nil
}

// signalReady tells whoever started nstrace that events now flow.
func (s *Session) signalReady() {
	if s.cfg.ReadyFD < 0 {
		return
	}
	f := os.NewFile(uintptr(s.cfg.ReadyFD), "ready")
	_, _ = f.Write([]byte{'\n'})
	f.Close()
}

// handle accounts for losses before e, then filters, decorates and writes
// it; at the end of a batch it writes out what is buffered.
func (s *Session) handle(e *event.Event) error {
	if s.probe.LostRecordSeen() {
		if err := s.writeLosses(e.Time); err != nil {
			return err
		}
	}
	if s.reopen.Swap(false) {
		if err := s.buf.Flush(); err != nil {
			return err
		}
		if err := s.sink.reopen(); err != nil {
			return err
		}
	}
	// Filter first what needs no decoration: decoration costs lookups.
	lost := e.Kind == event.Lost
	if !lost && !s.filter.PassUndecorated(e) || e.Kind == event.Exit && !s.cfg.Kinds.WantExit(e) {
		return nil
	}
	s.decorate(e)
	if !lost && !s.filter.PassDecorated(e) {
		return nil
	}
	if err := s.w.Write(e); err != nil {
		return err
	}
	if !lost {
		s.seen++
		s.metrics.Event(e)
		s.stats.add(e)
	}
	return nil
}

// endBatch runs when the ring buffer is empty: losses since the last
// record, then the buffered output.
func (s *Session) endBatch() error {
	if s.probe.LostSince() {
		if err := s.writeLosses(time.Now()); err != nil {
			return err
		}
	}
	return interrupted(s.buf.Flush())
}

// identitySource says, for --debug, which cgroup hierarchy names a
// process's container.
func identitySource(h procfs.Hierarchies) string {
	v2 := "cgroup v2"
	if h.V2 != "" {
		v2 += " (" + h.V2 + ")"
	} else {
		v2 += " (not mounted: every process is in its root)"
	}
	if h.Controller == "" {
		return v2 + "; no cgroup v1 hierarchy"
	}
	return fmt.Sprintf("%s; for a process in the v2 root, the cgroup v1 %s hierarchy (%s)", v2, h.Controller, h.V1)
}

// decorate adds what user space knows: cgroup path, container, and whose
// namespace a setns entered.
func (s *Session) decorate(e *event.Event) {
	paths := s.cgroups
	if e.CgroupV1 != "" {
		paths = s.cgroupsV1
	}
	e.Cgroup = paths.Path(e.CgroupID)
	e.Container = s.containers.Lookup(container.Cgroup{ID: e.CgroupID, V1: e.CgroupV1 != "", Name: e.CgroupName, Parent: e.CgroupParent, Path: e.Cgroup})
	switch e.Kind {
	case event.Setns:
		if t, ok := ns.OfCloneFlag(e.TargetType); ok && e.TargetNS != 0 {
			e.TargetOwner = s.owners.of(t, e.TargetNS)
		}
	case event.Clone, event.Unshare:
		if e.NewNS() != 0 {
			s.owners.changed()
		}
	}
}

// writeLosses writes a lost event for each reason whose count grew since
// the last one written. A child that could not join the traced set has
// its own record, so that reason is counted but not repeated here.
func (s *Session) writeLosses(at time.Time) error {
	now, err := s.probe.Losses()
	if err != nil {
		return err
	}
	for r := event.LostReason(0); r < event.LostReasons; r++ {
		n := now[r] - s.reported[r]
		if n == 0 || r == event.LostTracked {
			continue
		}
		if err := s.w.Write(&event.Event{Kind: event.Lost, Time: at, Count: n, Reason: r}); err != nil {
			return err
		}
	}
	s.reported = now
	return nil
}

// end writes out what is left and the summary, as the stop asks.
func (s *Session) end() (int, error) {
	reason := s.stop.Load()
	if reason == stopOutputGone {
		return 0, nil
	}
	err := s.writeLosses(time.Now())
	if err == nil {
		err = interrupted(s.buf.Flush())
	}
	if err != nil && !errors.Is(err, errInterrupted) {
		return 0, quiet(err)
	}
	s.report()
	return int(s.exitCode.Load()), nil
}

func (s *Session) report() {
	s.stderrMu.Lock()
	defer s.stderrMu.Unlock()
	s.stats.write(s.stderr)
	losses, _ := s.probe.Losses()
	fmt.Fprintf(s.stderr, "nstrace: %d events, %d lost", s.seen, losses.Total())
	var why []string
	for r := event.LostReason(0); r < event.LostReasons; r++ {
		if losses[r] > 0 {
			why = append(why, fmt.Sprintf("%s: %d", output.LostText(r), losses[r]))
		}
	}
	if len(why) > 0 {
		fmt.Fprintf(s.stderr, " (%s)", strings.Join(why, "; "))
	}
	if n := s.badRecords.Load(); n > 0 {
		fmt.Fprintf(s.stderr, ", %d undecodable records", n)
	}
	fmt.Fprintln(s.stderr)
}

// source is what the metrics read from a running session.
type source struct{ s *Session }

func (src source) Lost() [event.LostReasons]uint64 {
	l, _ := src.s.probe.Losses()
	return l
}

func (src source) Undecodable() uint64 { return src.s.badRecords.Load() }

func (src source) RingBuffer() (int, int) { return src.s.probe.Pending(), src.s.probe.BufferSize() }

// writeFailed ends the run for a write error: a stop that cut a blocked
// write short ends it as the stop would have.
func (s *Session) writeFailed(err error) (int, error) {
	if errors.Is(interrupted(err), errInterrupted) && s.stop.Load() != running {
		s.report()
		return int(s.exitCode.Load()), nil
	}
	return 0, quiet(err)
}

// quiet turns a write to a closed pipe into a clean exit: the reader has
// gone (nstrace | head), which is no error.
func quiet(err error) error {
	if errors.Is(err, syscall.EPIPE) {
		return nil
	}
	return fmt.Errorf("writing output: %w", err)
}

// CheckHostPID refuses to run outside the host's pid namespace: the
// kernel reports host pids, which such a /proc does not show, so pids,
// -p, owners and containers' pid namespaces would all be wrong.
func CheckHostPID(host ns.Set) error {
	own, err := procfs.ReadNS(procfs.Root, "self")
	if err != nil || host[ns.Pid] == 0 || own[ns.Pid] == 0 || own[ns.Pid] == host[ns.Pid] {
		return nil
	}
	return fmt.Errorf("not in the host's pid namespace (pid:[%d], the host's is pid:[%d]): run nstrace's container with the host's (docker run --pid=host, Kubernetes hostPID: true)", own[ns.Pid], host[ns.Pid])
}
