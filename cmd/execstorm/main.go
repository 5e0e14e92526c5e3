// SPDX-License-Identifier: Apache-2.0

// Command execstorm runs a program many times from parallel workers, as
// fast as it can: the load for nstrace's completeness tests and benchmark.
//
//	execstorm -n 20000 -w 2 [-path /bin/true] [ARG...]
//	execstorm -fork -n 100000 -w 2
//	execstorm -unshare-rate 50000 -d 2s   # prints the calls made
//
// Each exec gets ARG... as its arguments, so a tracer's output can be
// matched to the storm. It prints the elapsed time in seconds.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/nstrace/nstrace/internal/storm"
)

func main() {
	n := flag.Int("n", 20000, "execs in all")
	workers := flag.Int("w", 2, "parallel workers")
	path := flag.String("path", "/bin/true", "program to run")
	forks := flag.Bool("fork", false, "only fork processes that exit at once, no exec")
	unshares := flag.Int("unshare-rate", 0, "instead, call unshare(0) this many times a second for -d")
	d := flag.Duration("d", 2*time.Second, "how long -unshare-rate runs")
	flag.Parse()
	if *unshares > 0 {
		n, err := storm.Unshares(*unshares, *d)
		if err != nil {
			fmt.Fprintln(os.Stderr, "execstorm:", err)
			os.Exit(1)
		}
		fmt.Println(n)
		return
	}
	start := time.Now()
	run := func() error { return storm.Run(*n, *workers, *path, flag.Args()...) }
	if *forks {
		run = func() error { return storm.Forks(*n, *workers) }
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "execstorm:", err)
		os.Exit(1)
	}
	fmt.Printf("%.6f\n", time.Since(start).Seconds())
}
