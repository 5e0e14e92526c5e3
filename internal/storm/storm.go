// SPDX-License-Identifier: Apache-2.0

// Package storm runs a program many times from parallel workers, as fast as
// it can: the load behind nstrace's completeness tests and its benchmark.
package storm

import (
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Run execs path with args n times in all, split over workers, each run
// waited for before the worker starts the next. It fails if any run did.
func Run(n, workers int, path string, args ...string) error {
	if n < 0 || workers < 1 {
		return fmt.Errorf("storm: want n >= 0 and workers >= 1")
	}
	argv := append([]string{path}, args...)
	attr := &syscall.ProcAttr{Env: []string{}, Files: []uintptr{0, 1, 2}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for w := 0; w < workers; w++ {
		count := share(n, workers, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < count; i++ {
				pid, err := syscall.ForkExec(path, argv, attr)
				var ws syscall.WaitStatus
				if err == nil {
					_, err = syscall.Wait4(pid, &ws, 0, nil)
				}
				if err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if failed > 0 {
		return fmt.Errorf("storm: %d of %d runs of %s failed", failed, n, path)
	}
	return nil
}

// share is worker w's part of n runs.
func share(n, workers, w int) int {
	if w < n%workers {
		return n/workers + 1
	}
	return n / workers
}

// Forks creates n processes in all over workers, each exiting at once
// without exec: the cheapest process birth and death there is, for
// measuring how many events a tracer sustains.
func Forks(n, workers int) error {
	if n < 0 || workers < 1 {
		return fmt.Errorf("storm: want n >= 0 and workers >= 1")
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		count := share(n, workers, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for i := 0; i < count; i++ {
				// A raw fork: the child is this one thread and leaves at
				// once, before touching anything of the Go runtime.
				pid, _, errno := syscall.RawSyscall6(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0, 0, 0, 0)
				if errno != 0 {
					errs <- fmt.Errorf("storm: fork: %w", errno)
					return
				}
				if pid == 0 {
					syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 0, 0, 0)
				}
				var ws syscall.WaitStatus
				if _, err := syscall.Wait4(int(pid), &ws, 0, nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// Unshares calls unshare(0), which changes nothing, at about rate calls a
// second for d, and returns how many it made: a source of namespace-call
// events far faster than any process storm.
func Unshares(rate int, d time.Duration) (int, error) {
	if rate < 1 || d <= 0 {
		return 0, fmt.Errorf("storm: want rate >= 1 and d > 0")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const tick = time.Millisecond
	start := time.Now()
	calls := 0
	for elapsed := time.Duration(0); elapsed < d; elapsed = time.Since(start) {
		// Catch up to where the rate says we should be, then rest.
		due := int(float64(rate) * (elapsed + tick).Seconds())
		for ; calls < due; calls++ {
			if _, _, errno := syscall.RawSyscall(syscall.SYS_UNSHARE, 0, 0, 0); errno != 0 {
				return calls, fmt.Errorf("storm: unshare: %w", errno)
			}
		}
		time.Sleep(time.Until(start.Add(elapsed + tick)))
	}
	return calls, nil
}
