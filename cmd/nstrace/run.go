// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/nsinfo"
	"github.com/nstrace/nstrace/internal/output"
	"github.com/nstrace/nstrace/internal/probe"
)

// writer is the human or JSON view.
type writer interface {
	Write(*event.Event) error
}

// lostCheckEvery bounds how long a loss goes unreported under load.
const lostCheckEvery = 100 * time.Millisecond

// run traces until a signal, a closed output, or the end of COMMAND, and
// returns the exit status.
func run(ctx context.Context, opts options, stdout, stderr io.Writer) (int, error) {
	// Namespaces nstrace itself is in: the host's, as far as it can tell.
	host, _ := nsinfo.ReadNS(nsinfo.ProcRoot, "self")

	popts := probe.Options{
		Kinds:      opts.kinds,
		BufferSize: opts.bufferSize,
		Debug:      opts.debug,
	}
	if len(opts.pids) > 0 {
		for _, pid := range opts.pids {
			if _, err := os.Stat("/proc/" + strconv.Itoa(int(pid))); err != nil {
				return 0, fmt.Errorf("--pid %d: no such process", pid)
			}
		}
		popts.FilterPIDs, popts.PIDs, popts.Follow = true, opts.pids, opts.follow
	}
	if len(opts.command) > 0 {
		popts.FilterPIDs, popts.Follow = true, true
	}
	var err error
	if popts.NS, err = nsFilter(opts, host); err != nil {
		return 0, err
	}
	filter := userFilter{comms: opts.comms, host: host, onlyHost: opts.host, notHost: opts.noHost, nsChanges: opts.nsChanges}

	p, err := probe.Open(popts)
	if err != nil {
		return 0, err
	}
	defer p.Close()

	if opts.output != "" {
		f, err := os.Create(opts.output)
		if err != nil {
			return 0, fmt.Errorf("opening the output: %w", err)
		}
		defer f.Close()
		stdout = f
	}

	cgroups := nsinfo.NewCgroups("")
	defer cgroups.Close()
	containers := container.NewRegistry(nsinfo.ProcRoot, container.RuncRoots, host[event.NSPid])
	owners := newOwners(nsinfo.ProcRoot, host, containers)

	// A signal interrupts the read, and any wait for a slow output. With a
	// command, the command gets the terminal's signal too and nstrace
	// keeps going until it is gone; a second signal stops nstrace at once.
	interrupted := make(chan struct{})
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			close(interrupted)
			_ = p.Interrupt()
		case <-stopped:
		}
	}()

	aw := newAsyncWriter(stdout, interrupted)
	bw := bufio.NewWriterSize(aw, 64<<10)
	var w writer
	if opts.json {
		w = output.NewJSON(bw)
	} else {
		h := output.NewHuman(bw, host, opts.allNS)
		if containers.Any() || len(opts.containers) > 0 {
			h.ShowContainers()
		}
		if err := h.WriteHeader(); err != nil {
			return 0, quiet(err)
		}
		w = h
	}
	if err := bw.Flush(); err != nil {
		return 0, quiet(err)
	}

	var cmd *command
	var cmdDone <-chan int
	if len(opts.command) > 0 {
		if cmd, err = startCommand(opts.command); err != nil {
			return 0, err
		}
		defer cmd.abort()
		if err := p.Trace(uint32(cmd.pid)); err != nil {
			return 0, err
		}
		if err := cmd.start(); err != nil {
			return 0, fmt.Errorf("starting %s: %w", opts.command[0], err)
		}
		cmdDone = cmd.done
	}

	if opts.readyFD >= 0 {
		f := os.NewFile(uintptr(opts.readyFD), "ready")
		_, _ = f.Write([]byte{'\n'})
		f.Close()
	}

	var (
		e           event.Event
		seen, lost  uint64
		badRecords  uint64
		exitCode    = -1
		nextLostChk = time.Now().Add(lostCheckEvery)
	)
	report := func() {
		fmt.Fprintf(stderr, "nstrace: %d events, %d lost", seen, lost)
		if badRecords > 0 {
			fmt.Fprintf(stderr, ", %d undecodable records", badRecords)
		}
		fmt.Fprintln(stderr)
	}
	checkLost := func() error {
		n, err := p.Lost()
		if err != nil || n == 0 {
			return err
		}
		lost += n
		return w.Write(&event.Event{Kind: event.Lost, Time: time.Now(), Count: n})
	}
	flush := func() error {
		if err := checkLost(); err != nil {
			return err
		}
		nextLostChk = time.Now().Add(lostCheckEvery)
		return bw.Flush()
	}
	// finish writes out what is left and the summary.
	finish := func(code int) (int, error) {
		err := flush()
		if err == nil {
			err = aw.Close()
		}
		if err != nil && !errors.Is(err, errInterrupted) {
			return 0, quiet(err)
		}
		report()
		return code, nil
	}

	for {
		select {
		case code := <-cmdDone:
			// Everything the tree did is queued by now: drain, then end.
			exitCode, cmdDone = code, nil
		default:
		}
		p.SetDeadline(time.Now().Add(probe.PollInterval))
		err := p.Read(&e)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if exitCode >= 0 && p.Pending() == 0 {
				return finish(exitCode)
			}
			if err := flush(); err != nil {
				return interruptedOr(err, finish)
			}
			if outputGone(stdout) {
				return 0, nil
			}
			continue
		case errors.Is(err, ringbuf.ErrClosed):
			// Interrupted by a signal: the last losses, the summary, done.
			return finish(max(exitCode, 0))
		case errors.Is(err, probe.ErrShortRecord), errors.Is(err, probe.ErrUnknownKind):
			badRecords++
			continue
		default:
			return 0, fmt.Errorf("reading events: %w", err)
		}

		// Filter first: the filters need no decoration, and decoration
		// may read /proc.
		if !filter.pass(&e) {
			continue
		}
		e.Cgroup = cgroups.Path(e.CgroupID)
		e.Container = containers.Lookup(e.Cgroup, e.NS[event.NSPid])
		if e.Kind == event.Setns && e.TargetNS != 0 {
			if t, ok := nsTypeOfBit(e.TargetType); ok {
				e.TargetOwner = owners.of(t, e.TargetNS)
			}
		}
		seen++
		if err := w.Write(&e); err != nil {
			return interruptedOr(err, finish)
		}
		if p.Pending() == 0 || time.Now().After(nextLostChk) {
			if err := flush(); err != nil {
				return interruptedOr(err, finish)
			}
		}
	}
}

// interruptedOr ends the run for a write error: a signal that cut a
// blocked write short ends it as a signal does.
func interruptedOr(err error, finish func(int) (int, error)) (int, error) {
	if errors.Is(err, errInterrupted) {
		return finish(0)
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
