// SPDX-License-Identifier: Apache-2.0

// Package tracer is an nstrace session: it opens the probe for what the
// user chose, reads the kernel's records, filters and decorates them,
// writes them out, and accounts for every event the kernel could not
// deliver.
package tracer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/launch"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/output"
	"github.com/nstrace/nstrace/internal/probe"
	"github.com/nstrace/nstrace/internal/procfs"
	"github.com/nstrace/nstrace/internal/scope"
)

// Config is what the command line chose.
type Config struct {
	Kinds      event.KindSet
	JSON       bool
	AllNS      bool
	BufferSize int
	Debug      bool
	// Output is a file to write the feed to; "" is stdout.
	Output string
	Scope  scope.Scope
	// Command, if set, is run traced; the session ends when its tree is
	// gone and returns its exit status.
	Command []string
	// ReadyFD, if not negative, gets a byte once the programs are attached.
	ReadyFD int
}

// writer is the human or JSON view.
type writer interface {
	Write(*event.Event) error
}

// lostCheckEvery bounds how long a loss goes unreported under load.
const lostCheckEvery = 100 * time.Millisecond

// Session is one run of the tracer.
type Session struct {
	cfg    Config
	stdout io.Writer
	stderr io.Writer

	probe      *probe.Probe
	filter     *scope.UserFilter
	cgroups    *procfs.Cgroups
	containers *container.Registry
	owners     *owners
	closers    []func()

	out *asyncWriter
	buf *bufio.Writer
	w   writer

	cmd  *launch.Command
	done <-chan int // COMMAND's exit status, once its tree is gone

	interrupted chan struct{}

	seen, lost, badRecords uint64
	exitCode               int
	nextLostCheck          time.Time
}

// New opens the probe and the output for cfg. The session's Close must be
// called.
func New(cfg Config, stdout, stderr io.Writer) (_ *Session, err error) {
	s := &Session{cfg: cfg, stdout: stdout, stderr: stderr, exitCode: -1, interrupted: make(chan struct{})}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// Namespaces nstrace itself is in: the host's, as far as it can tell.
	host, _ := procfs.ReadNS(procfs.Root, "self")
	cfg.Scope.Command = len(cfg.Command) > 0
	filter, err := cfg.Scope.KernelFilter(procfs.Root, host)
	if err != nil {
		return nil, err
	}
	s.filter = cfg.Scope.UserFilter(host)

	s.probe, err = probe.Open(probe.Options{Kinds: cfg.Kinds, BufferSize: cfg.BufferSize, Debug: cfg.Debug, Filter: filter})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.probe.Close() })

	if cfg.Output != "" {
		f, err := os.Create(cfg.Output)
		if err != nil {
			return nil, fmt.Errorf("opening the output: %w", err)
		}
		s.closers = append(s.closers, func() { f.Close() })
		s.stdout = f
	}

	s.cgroups = procfs.NewCgroups("")
	s.closers = append(s.closers, s.cgroups.Close)
	s.containers = container.NewRegistry(procfs.Root, container.RuncRoots, host[ns.Pid])
	s.owners = newOwners(procfs.Root, host, s.containers)

	s.out = newAsyncWriter(s.stdout, s.interrupted)
	s.buf = bufio.NewWriterSize(s.out, 64<<10)
	if cfg.JSON {
		s.w = output.NewJSON(s.buf)
	} else {
		h := output.NewHuman(s.buf, host, cfg.AllNS)
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

// Run traces until ctx ends, the output closes, or COMMAND's tree is gone,
// and returns the exit status: COMMAND's, or 0.
func (s *Session) Run(ctx context.Context) (int, error) {
	// A signal interrupts the read, and any wait for a slow output.
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			close(s.interrupted)
			_ = s.probe.Interrupt()
		case <-stopped:
		}
	}()
	if err := s.startCommand(); err != nil {
		return 0, err
	}
	s.signalReady()
	s.nextLostCheck = time.Now().Add(lostCheckEvery)

	var e event.Event
	for {
		select {
		case code := <-s.done:
			// Everything the tree did is queued by now: drain, then end.
			s.exitCode, s.done = code, nil
		default:
		}
		s.probe.SetDeadline(time.Now().Add(probe.PollInterval))
		err := s.probe.Read(&e)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if s.exitCode >= 0 && s.probe.Pending() == 0 {
				return s.finish(s.exitCode)
			}
			if err := s.flush(); err != nil {
				return s.writeFailed(err)
			}
			if outputGone(s.stdout) {
				return 0, nil
			}
			continue
		case errors.Is(err, probe.ErrClosed):
			// Interrupted by a signal: the last losses, the summary, done.
			return s.finish(max(s.exitCode, 0))
		case errors.Is(err, probe.ErrShortRecord), errors.Is(err, probe.ErrUnknownKind):
			s.badRecords++
			continue
		default:
			return 0, fmt.Errorf("reading events: %w", err)
		}
		if err := s.handle(&e); err != nil {
			return s.writeFailed(err)
		}
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
	if err := cmd.Release(); err != nil {
		return fmt.Errorf("starting %s: %w", s.cfg.Command[0], err)
	}
	s.done = cmd.Done()
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

// handle filters, decorates and writes one event.
func (s *Session) handle(e *event.Event) error {
	// Filter first: the filters need no decoration, and decoration may
	// read /proc.
	if !s.filter.Pass(e) {
		return nil
	}
	s.decorate(e)
	s.seen++
	if err := s.w.Write(e); err != nil {
		return err
	}
	if s.probe.Pending() == 0 || time.Now().After(s.nextLostCheck) {
		return s.flush()
	}
	return nil
}

// decorate adds what user space knows: cgroup path, container, and whose
// namespace a setns entered.
func (s *Session) decorate(e *event.Event) {
	e.Cgroup = s.cgroups.Path(e.CgroupID)
	e.Container = s.containers.Lookup(e.Cgroup, e.NS[ns.Pid])
	if e.Kind == event.Setns && e.TargetNS != 0 {
		if t, ok := ns.OfCloneFlag(e.TargetType); ok {
			e.TargetOwner = s.owners.of(t, e.TargetNS)
		}
	}
}

// checkLost writes a LOST line for what the kernel could not queue since
// the last check.
func (s *Session) checkLost() error {
	n, err := s.probe.Lost()
	if err != nil || n == 0 {
		return err
	}
	s.lost += n
	return s.w.Write(&event.Event{Kind: event.Lost, Time: time.Now(), Count: n})
}

func (s *Session) flush() error {
	if err := s.checkLost(); err != nil {
		return err
	}
	s.nextLostCheck = time.Now().Add(lostCheckEvery)
	return s.buf.Flush()
}

// finish writes out what is left and the summary.
func (s *Session) finish(code int) (int, error) {
	err := s.flush()
	if err == nil {
		err = s.out.Close()
	}
	if err != nil && !errors.Is(err, errInterrupted) {
		return 0, quiet(err)
	}
	s.report()
	return code, nil
}

func (s *Session) report() {
	fmt.Fprintf(s.stderr, "nstrace: %d events, %d lost", s.seen, s.lost)
	if s.badRecords > 0 {
		fmt.Fprintf(s.stderr, ", %d undecodable records", s.badRecords)
	}
	fmt.Fprintln(s.stderr)
}

// writeFailed ends the run for a write error: a signal that cut a blocked
// write short ends it as a signal does.
func (s *Session) writeFailed(err error) (int, error) {
	if errors.Is(err, errInterrupted) {
		return s.finish(0)
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
