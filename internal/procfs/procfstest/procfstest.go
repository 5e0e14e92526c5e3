// SPDX-License-Identifier: Apache-2.0

// Package procfstest builds fake /proc trees for tests that need no
// privileges.
package procfstest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Process makes root/PID: namespace links (name to target, such as
// "net": "net:[4026532500]") and a status file naming comm, with PPid 1
// and NSpid pid.
func Process(t testing.TB, root, pid, comm string, links map[string]string) {
	t.Helper()
	dir := filepath.Join(root, pid, "ns")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for n, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	status := fmt.Sprintf("Name:\t%s\nPPid:\t1\nNSpid:\t%s\n", comm, pid)
	if err := os.WriteFile(filepath.Join(root, pid, "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Status replaces root/PID/status.
func Status(t testing.TB, root, pid, status string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, pid), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, pid, "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Mountinfo writes root/self/mountinfo.
func Mountinfo(t testing.TB, root, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "self", "mountinfo"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
