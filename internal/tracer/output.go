// SPDX-License-Identifier: Apache-2.0

package tracer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// sink is where the feed goes: written from the read loop itself, with no
// hand-off to another goroutine. A pipe or terminal is opened again as a
// description of nstrace's own in non-blocking mode, so that a reader
// that stops reading parks the loop in Go's poller, where a deadline can
// cut the write short; the description the shell and COMMAND share is
// left as it was. Anything else (a file, a socket) is written as given.
type sink struct {
	w    io.Writer
	file *os.File // the pollable reopened description, or nil
	// watch is the descriptor to watch for a reader that left.
	watch int
	// path, for -o FILE: reopened on SIGHUP for log rotation.
	path string
	// grace is how long a stopping nstrace waits on a reader that makes
	// no progress (time.Duration; 0 while running).
	grace atomic.Int64
}

// openSink opens the feed's destination: path, or stdout when path is "".
func openSink(path string, stdout io.Writer) (*sink, error) {
	if path != "" {
		f, err := openAppend(path)
		if err != nil {
			return nil, err
		}
		return &sink{w: f, file: nil, watch: -1, path: path}, nil
	}
	s := &sink{w: stdout, watch: -1}
	f, ok := stdout.(*os.File)
	if !ok {
		return s, nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return s, nil
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO, unix.S_IFCHR:
		s.watch = int(f.Fd())
		own, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), os.O_WRONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
		if err == nil {
			s.w, s.file = own, own
		}
	case unix.S_IFSOCK:
		s.watch = int(f.Fd())
	}
	return s, nil
}

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the output: %w", err)
	}
	return f, nil
}

func (s *sink) Write(p []byte) (int, error) {
	done := 0
	for {
		n, err := s.w.Write(p[done:])
		done += n
		if n == 0 || s.file == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return done, err
		}
		// The reader still reads: a stop cuts short only a write that
		// makes no progress for a whole grace, not one a slow reader
		// is taking in, which would leave half a line.
		s.cutShort(time.Duration(s.grace.Load()))
	}
}

// cutShort makes writes that make no progress for d fail with
// errInterrupted; safe to call from another goroutine.
func (s *sink) cutShort(d time.Duration) {
	if s.file != nil {
		s.grace.Store(int64(d))
		_ = s.file.SetWriteDeadline(time.Now().Add(d))
	}
}

// reopen starts -o FILE again, after log rotation moved it away.
func (s *sink) reopen() error {
	if s.path == "" {
		return nil
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("reopening the output: %w", err)
	}
	if old, ok := s.w.(*os.File); ok {
		old.Close()
	}
	s.w = f
	return nil
}

func (s *sink) Close() error {
	if f, ok := s.w.(*os.File); ok && (s.file != nil || s.path != "") {
		return f.Close()
	}
	return nil
}

// errInterrupted ends a write that a stop cut short.
var errInterrupted = errors.New("interrupted")

// interrupted maps a deadline that cut a write short to errInterrupted.
func interrupted(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errInterrupted
	}
	return err
}

// waitGone blocks until the reader of a pipe, socket or terminal leaves
// (POLLERR or POLLHUP), so that an idle nstrace whose reader quit
// (nstrace | head -1) ends without waiting for an event to fail to write.
// It costs nothing while it waits. It returns false if there is nothing to
// watch.
func (s *sink) waitGone() bool {
	if s.watch < 0 {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(s.watch)}}
	for {
		n, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0
	}
}
