// SPDX-License-Identifier: Apache-2.0

package probe

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ring reads the BPF ring buffer from its mapped memory. Records are
// decoded where they lie, never copied; the consumer position is stored
// back at the end of a batch (or once a sixteenth of the buffer is held),
// not per record, so the kernel side's reserve rarely finds its line taken.
// Waiting goes through Go's network poller: a reader that sleeps holds no
// thread in a system call, and an idle nstrace has no timer at all.
type ring struct {
	cons, mapped []byte    // the consumer page; the producer page, then the data twice
	data         []byte    // the data, twice
	consPos      *uint64   // shared with the kernel: written only here
	prodPos      *uint64   // shared with the kernel: read only here
	mask         uint64    // size - 1
	size         uint64    // bytes of data
	pos          uint64    // the next record to read; consPos lags it
	held         uint64    // bytes read and not yet given back
	batch        uint64    // bytes read since it was last found empty
	emptied      time.Time // when that was
	file         *os.File  // the map fd, in the poller
	conn         syscall.RawConn
	rest         *restTimer

	flush, closed atomic.Bool
}

// Record header bits (kernel/bpf/ringbuf.c).
const (
	ringHeaderSize = 8
	ringBusy       = 1 << 31
	ringDiscard    = 1 << 30
)

// newRing maps the ring buffer behind fd (which it duplicates) of size
// bytes of data.
func newRing(fd int, size int) (*ring, error) {
	page := os.Getpagesize()
	r := &ring{size: uint64(size), mask: uint64(size - 1)}
	var err error
	if r.cons, err = unix.Mmap(fd, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("mapping the consumer page: %w", err)
	}
	if r.mapped, err = unix.Mmap(fd, int64(page), page+2*size, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		r.close()
		return nil, fmt.Errorf("mapping the data pages: %w", err)
	}
	r.consPos = (*uint64)(unsafe.Pointer(&r.cons[0]))
	r.prodPos = (*uint64)(unsafe.Pointer(&r.mapped[0]))
	r.data = r.mapped[page:]
	r.pos = atomic.LoadUint64(r.consPos)

	// A non-blocking duplicate goes into the poller: readable when the
	// kernel side wakes the ring's waiters.
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("duplicating the ring buffer fd: %w", err)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		r.close()
		return nil, fmt.Errorf("ring buffer fd: %w", err)
	}
	r.file = os.NewFile(uintptr(dup), "ringbuf")
	if r.conn, err = r.file.SyscallConn(); err != nil {
		r.close()
		return nil, fmt.Errorf("ring buffer fd: %w", err)
	}
	if r.rest, err = newRestTimer(); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// restTimer sleeps in Go's poller on a timerfd, not on a Go timer: while
// the runtime has no timer, its monitor thread sleeps for good once the
// reader does, instead of waking with every rest.
type restTimer struct {
	file *os.File
	conn syscall.RawConn
}

func newRestTimer() (*restTimer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating a timer: %w", err)
	}
	t := &restTimer{file: os.NewFile(uintptr(fd), "rest")}
	if t.conn, err = t.file.SyscallConn(); err != nil {
		t.file.Close()
		return nil, fmt.Errorf("timer fd: %w", err)
	}
	return t, nil
}

// sleep returns after d. Its system calls are raw: the scheduler, which
// wakes its monitor at every system call it is told of, never hears of
// them.
func (t *restTimer) sleep(d time.Duration) error {
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(d.Nanoseconds())}
	var expirations uint64
	var serr error
	err := t.conn.Control(func(fd uintptr) {
		_, _, errno := syscall.RawSyscall6(unix.SYS_TIMERFD_SETTIME, fd, 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0)
		if errno != 0 {
			serr = errno
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("arming the timer: %w", err)
	}
	return t.conn.Read(func(fd uintptr) bool {
		_, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&expirations)), 8)
		return errno != unix.EAGAIN
	})
}

// minRest is the shortest rest between batches.
const minRest = time.Millisecond

// restFor is how long to rest after a batch of n bytes that came in over
// span: most, or less if the ring buffer, filling as fast, would be a
// quarter full (room bytes) sooner. Records wait at most that long, and a
// burst four times as fast still finds room.
func restFor(most time.Duration, n uint64, span time.Duration, room uint64) time.Duration {
	if n == 0 || span <= 0 {
		return most
	}
	fill := time.Duration(float64(span) * float64(room) / float64(n))
	return max(min(most, fill), minRest)
}

// restAfterBatch sleeps while records gather: at most most, less as the
// batch just read says (restFor).
func (r *ring) restAfterBatch(most time.Duration) error {
	now := time.Now()
	d := restFor(most, r.batch, now.Sub(r.emptied), r.size/4)
	r.drained(now)
	return r.rest.sleep(d)
}

// drained notes that the ring was found empty at now: the records read
// next come in after it.
func (r *ring) drained(now time.Time) {
	r.batch = 0
	r.emptied = now
}

// next returns the next committed record, or ErrEmpty. The record is
// valid until the following call.
func (r *ring) next() ([]byte, error) {
	for {
		prod := atomic.LoadUint64(r.prodPos)
		if prod == r.pos {
			r.release()
			return nil, ErrEmpty
		}
		// The header's length is loaded with acquire order against the
		// kernel's commit (an xchg): the record's bytes are visible after.
		off := r.pos & r.mask
		hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[off])))
		if hdr&ringBusy != 0 {
			// Reserved, not yet committed: its writer is still at it.
			r.release()
			return nil, ErrEmpty
		}
		n := uint64(hdr &^ (ringBusy | ringDiscard))
		start := off + ringHeaderSize
		step := ringHeaderSize + (n+7)&^7
		r.pos += step
		r.held += step
		r.batch += step
		if hdr&ringDiscard != 0 {
			continue
		}
		// Hand the earlier records back once they amount to a sixteenth of
		// the buffer, so a long batch never starves the kernel side.
		if r.held-step > r.size/16 {
			atomic.StoreUint64(r.consPos, r.pos-step)
			r.held = step
		}
		// The data pages are mapped twice in a row: a record that wraps
		// is contiguous.
		return r.data[start : start+n : start+n], nil
	}
}

// release gives every record read so far back to the kernel side.
func (r *ring) release() {
	if r.held != 0 {
		atomic.StoreUint64(r.consPos, r.pos)
		r.held = 0
	}
}

// available is how many bytes are queued, not yet given back included.
func (r *ring) available() int {
	return int(atomic.LoadUint64(r.prodPos) - atomic.LoadUint64(r.consPos))
}

// wait sleeps until the kernel side wakes the ring's waiters, or Flush or
// Close is called. ready is checked once the wait is set up: a wake-up
// that came before is not lost.
func (r *ring) wait(ready func() bool) error {
	for {
		// Clear a deadline Flush or Close set, then look at their flags:
		// one that comes later sets the deadline again and ends the wait.
		_ = r.file.SetReadDeadline(time.Time{})
		if err := r.stopped(); err != nil {
			return err
		}
		err := r.conn.Read(func(uintptr) bool { return ready() })
		if err == nil {
			return nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			if r.closed.Load() {
				return ErrClosed
			}
			return fmt.Errorf("waiting for the ring buffer: %w", err)
		}
	}
}

// stopped says whether Flush or Close asked reading to end.
func (r *ring) stopped() error {
	switch {
	case r.closed.Load():
		return ErrClosed
	case r.flush.Load():
		return ErrFlushed
	}
	return nil
}

// interrupt ends a wait: after Flush, reads return what is queued, then
// ErrFlushed; after Close, ErrClosed. Safe from any goroutine.
func (r *ring) interrupt(closing bool) {
	if closing {
		r.closed.Store(true)
	} else {
		r.flush.Store(true)
	}
	_ = r.file.SetReadDeadline(time.Unix(1, 0))
}

// close unmaps the ring and closes its fd.
func (r *ring) close() error {
	var errs []error
	if r.rest != nil {
		errs = append(errs, r.rest.file.Close())
		r.rest = nil
	}
	if r.file != nil {
		errs = append(errs, r.file.Close())
		r.file = nil
	}
	if r.mapped != nil {
		errs = append(errs, unix.Munmap(r.mapped))
		r.mapped, r.data = nil, nil
	}
	if r.cons != nil {
		errs = append(errs, unix.Munmap(r.cons))
		r.cons = nil
	}
	return errors.Join(errs...)
}
