// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/cilium/ebpf/ringbuf"

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

func run(ctx context.Context, opts options, stdout, stderr io.Writer) error {
	p, err := probe.Open(probe.Options{
		Kinds:      opts.kinds,
		BufferSize: opts.bufferSize,
		Debug:      opts.debug,
	})
	if err != nil {
		return err
	}
	defer p.Close()

	// Namespaces nstrace itself is in: the host's, as far as it can tell.
	host, _ := nsinfo.ReadNS(nsinfo.ProcRoot, "self")
	cgroups := nsinfo.NewCgroups("")
	defer cgroups.Close()

	bw := bufio.NewWriterSize(stdout, 64<<10)
	var w writer
	if opts.json {
		w = output.NewJSON(bw)
	} else {
		h := output.NewHuman(bw, host, opts.allNS)
		if err := h.WriteHeader(); err != nil {
			return quiet(err)
		}
		w = h
	}
	if err := bw.Flush(); err != nil {
		return quiet(err)
	}

	if opts.readyFD >= 0 {
		f := os.NewFile(uintptr(opts.readyFD), "ready")
		_, _ = f.Write([]byte{'\n'})
		f.Close()
	}

	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
			_ = p.Interrupt()
		case <-stopped:
		}
	}()

	var (
		e           event.Event
		seen, lost  uint64
		badRecords  uint64
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

	for {
		p.SetDeadline(time.Now().Add(probe.PollInterval))
		err := p.Read(&e)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			if err := checkLost(); err != nil {
				return quiet(err)
			}
			if err := bw.Flush(); err != nil {
				return quiet(err)
			}
			nextLostChk = time.Now().Add(lostCheckEvery)
			continue
		case errors.Is(err, ringbuf.ErrClosed):
			// Interrupted by a signal: the last losses, the summary, done.
			if err := checkLost(); err != nil {
				return quiet(err)
			}
			if err := bw.Flush(); err != nil {
				return quiet(err)
			}
			report()
			return nil
		case errors.Is(err, probe.ErrShortRecord), errors.Is(err, probe.ErrUnknownKind):
			badRecords++
			continue
		default:
			return fmt.Errorf("reading events: %w", err)
		}

		if opts.nsChanges && len(e.NewNS()) == 0 {
			continue
		}
		seen++
		e.Cgroup = cgroups.Path(e.CgroupID)
		if err := w.Write(&e); err != nil {
			return quiet(err)
		}
		if p.Pending() == 0 || time.Now().After(nextLostChk) {
			if err := checkLost(); err != nil {
				return quiet(err)
			}
			if err := bw.Flush(); err != nil {
				return quiet(err)
			}
			nextLostChk = time.Now().Add(lostCheckEvery)
		}
	}
}

// quiet turns a write to a closed pipe into a clean exit: the reader has
// gone (nstrace | head), which is no error.
func quiet(err error) error {
	if errors.Is(err, syscall.EPIPE) {
		return nil
	}
	return fmt.Errorf("writing output: %w", err)
}
