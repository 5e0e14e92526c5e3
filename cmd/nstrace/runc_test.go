// SPDX-License-Identifier: Apache-2.0

package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nstrace/nstrace/internal/testutil"
)

// runcBundle builds a busybox container bundle running args.
func runcBundle(t *testing.T, args ...string) string {
	t.Helper()
	testutil.NeedTools(t, "runc", "busybox")
	dir := t.TempDir()
	testutil.BusyboxRootfs(t, dir)
	spec := exec.Command("runc", "spec")
	spec.Dir = dir
	if out, err := spec.CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v %s", err, out)
	}
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	proc := cfg["process"].(map[string]any)
	proc["terminal"] = false
	proc["args"] = args
	b, _ = json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runc runs a runc command with no stdio: a detached container keeps
// whatever it is given open.
func runc(t *testing.T, dir string, args ...string) {
	t.Helper()
	runcUnder(t, dir, []string{"runc"}, args...)
}

// runcUnder is runc run by the command argv, which ends with runc's own
// name or runs runc with the arguments that follow it.
func runcUnder(t *testing.T, dir string, argv []string, args ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], append(argv[1:len(argv):len(argv)], args...)...)
	cmd.Dir = dir
	errs, err := os.CreateTemp("", "runc-stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(errs.Name())
	defer errs.Close()
	cmd.Stderr = errs
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(errs.Name())
		t.Fatalf("runc %v: %v: %s", args, err, msg)
	}
}
