// SPDX-License-Identifier: Apache-2.0

package tracer

import (
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// outputGone reports whether w is a pipe or socket whose reader has left,
// so that an idle nstrace whose reader quit (nstrace | head -1) ends
// without waiting for an event to fail to write.
func outputGone(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: 0}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0
}

// errInterrupted ends a write that a signal cut short.
var errInterrupted = errors.New("interrupted")

// asyncWriter hands what it is given to a goroutine that writes it, so the
// event loop never sits in a blocked write(2): a reader that stops reading
// makes the loop wait on a bounded queue instead, where a signal can still
// reach it. The kernel side then counts what it cannot queue.
type asyncWriter struct {
	queue chan []byte
	free  chan []byte
	stop  <-chan struct{}
	mu    sync.Mutex
	err   error
	done  chan struct{}
}

// closeGrace is how long a stopped nstrace still tries to write what it
// has queued.
const closeGrace = 500 * time.Millisecond

// asyncDepth is how many chunks (of the bufio.Writer's size) may wait.
const asyncDepth = 8

func newAsyncWriter(w io.Writer, stop <-chan struct{}) *asyncWriter {
	a := &asyncWriter{
		queue: make(chan []byte, asyncDepth),
		free:  make(chan []byte, asyncDepth+1),
		stop:  stop,
		done:  make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		for b := range a.queue {
			if _, err := w.Write(b); err != nil {
				a.mu.Lock()
				a.err = err
				a.mu.Unlock()
				for range a.queue {
				}
				return
			}
			select {
			case a.free <- b[:0]:
			default:
			}
		}
	}()
	return a
}

func (a *asyncWriter) Write(p []byte) (int, error) {
	a.mu.Lock()
	err := a.err
	a.mu.Unlock()
	if err != nil {
		return 0, err
	}
	var b []byte
	select {
	case b = <-a.free:
	default:
	}
	b = append(b, p...)
	select {
	case a.queue <- b:
		return len(p), nil
	default:
	}
	select {
	case a.queue <- b:
		return len(p), nil
	case <-a.stop:
		return 0, errInterrupted
	}
}

// Close waits until everything queued is written; once stopped, for a
// short while only, since the reader may never read again.
func (a *asyncWriter) Close() error {
	close(a.queue)
	select {
	case <-a.done:
	case <-a.stop:
		select {
		case <-a.done:
		case <-time.After(closeGrace):
			return errInterrupted
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}
