// SPDX-License-Identifier: Apache-2.0

// Command execstorm runs a program many times from parallel workers, as
// fast as it can: the load for nstrace's completeness tests and benchmark.
//
//	execstorm -n 20000 -w 2 [-path /bin/true] [ARG...]
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
	flag.Parse()
	start := time.Now()
	if err := storm.Run(*n, *workers, *path, flag.Args()...); err != nil {
		fmt.Fprintln(os.Stderr, "execstorm:", err)
		os.Exit(1)
	}
	fmt.Printf("%.6f\n", time.Since(start).Seconds())
}
