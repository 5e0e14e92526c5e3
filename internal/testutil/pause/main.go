// SPDX-License-Identifier: Apache-2.0

// Command pause is the process of a pod's sandbox in the CRI tests, as
// Kubernetes' pause image runs one: it holds the namespaces the pod's
// containers join, reaps the children it inherits, and exits 0 on
// SIGINT or SIGTERM. It is built static and put alone in an image.
package main

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGCHLD)
	for s := range sigs {
		if s != unix.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
