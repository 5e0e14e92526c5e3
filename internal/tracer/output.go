// SPDX-License-Identifier: Apache-2.0

package tracer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sink is where the feed goes: written from the read loop itself, with no
// hand-off to another goroutine. A pipe or terminal is opened again as a
// description of nstrace's own in non-blocking mode, so that a reader
// that stops reading parks the loop in Go's poller, where a deadline can
// cut the write short; the description the shell and COMMAND share is
// left as it was. Files and pipes are written with raw system calls (see
// rawWriter); anything else (a socket) is written as given.
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
		return &sink{w: newRawWriter(f, false), watch: -1, path: path}, nil
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
			s.w, s.file = newRawWriter(own, true), own
		}
	case unix.S_IFREG:
		s.w = newRawWriter(f, false)
	case unix.S_IFSOCK:
		s.watch = int(f.Fd())
	}
	return s, nil
}

// rawWriter writes a file with raw system calls, which the Go scheduler
// does not see: an ordinary write wakes the runtime's monitor thread from
// its sleep, and it then polls every 20µs for a millisecond or more, at
// every batch nstrace writes. A regular file's write does not wait for a
// reader, so it is made as it is; a non-blocking pipe's or terminal's
// waits in the poller while the reader is slow, where a deadline reaches
// it.
type rawWriter struct {
	f    *os.File
	conn syscall.RawConn // set for a non-blocking description
}

func newRawWriter(f *os.File, nonBlocking bool) *rawWriter {
	w := &rawWriter{f: f}
	if nonBlocking {
		if c, err := f.SyscallConn(); err == nil {
			w.conn = c
		}
	}
	return w
}

func (w *rawWriter) Write(p []byte) (int, error) {
	if w.conn == nil {
		n, err := rawWrite(int(w.f.Fd()), p)
		return n, w.wrap(err)
	}
	var n int
	var werr error
	err := w.conn.Write(func(fd uintptr) bool {
		k, err := rawWrite(int(fd), p[n:])
		n += k
		if err == unix.EAGAIN {
			return false
		}
		werr = err
		return true
	})
	if err == nil {
		err = w.wrap(werr)
	}
	return n, err
}

// wrap names the file in an error, as os.File's writes do.
func (w *rawWriter) wrap(err error) error {
	if err == nil {
		return nil
	}
	return &os.PathError{Op: "write", Path: w.f.Name(), Err: err}
}

// rawWrite writes all of p to fd, or up to an error (EAGAIN included).
func rawWrite(fd int, p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[done])), uintptr(len(p)-done))
		switch {
		case errno == unix.EINTR:
			continue
		case errno != 0:
			return done, errno
		case n == 0:
			return done, io.ErrShortWrite
		}
		done += int(n)
	}
	return done, nil
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
	if old, ok := s.w.(*rawWriter); ok {
		old.f.Close()
	}
	s.w = newRawWriter(f, false)
	return nil
}

func (s *sink) Close() error {
	if w, ok := s.w.(*rawWriter); ok && (s.file != nil || s.path != "") {
		return w.f.Close()
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
