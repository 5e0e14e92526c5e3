// SPDX-License-Identifier: Apache-2.0

// Package storm runs a program many times from parallel workers, as fast as
// it can: the load behind nstrace's completeness tests and its benchmark.
package storm

import (
	"fmt"
	"sync"
	"syscall"
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
		count := n / workers
		if w < n%workers {
			count++
		}
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
