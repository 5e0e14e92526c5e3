// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// aptSources are the suites kernels and guest tools come from: bookworm
// (Debian 12: 6.1, 6.12 from its updates, the tools) and bullseye
// (Debian 11: 5.10). The host's own apt configuration is left alone.
const aptSources = `deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
`

// apt runs apt-get and apt-cache against a private list directory with
// the sources above, for amd64 and arm64.
type apt struct {
	dir  string
	once sync.Once
	err  error
}

func newApt(cache string) *apt { return &apt{dir: filepath.Join(cache, "apt")} }

func (a *apt) options() []string {
	return []string{
		"-o", "Dir::State::Lists=" + filepath.Join(a.dir, "lists"),
		"-o", "Dir::Etc::SourceList=" + filepath.Join(a.dir, "sources.list"),
		"-o", "Dir::Etc::SourceParts=" + filepath.Join(a.dir, "sources.list.d"),
		"-o", "Dir::Cache=" + filepath.Join(a.dir, "cache"),
		"-o", "APT::Architecture=amd64",
		"-o", "APT::Architectures::=amd64",
		"-o", "APT::Architectures::=arm64",
		"-o", "Debug::NoLocking=1",
		"-qq",
	}
}

// update refreshes the lists once per run, or not at all if they are
// less than a day old.
func (a *apt) update() error {
	a.once.Do(func() {
		for _, d := range []string{"lists/partial", "cache/archives/partial", "sources.list.d"} {
			if a.err = os.MkdirAll(filepath.Join(a.dir, d), 0o755); a.err != nil {
				return
			}
		}
		src := filepath.Join(a.dir, "sources.list")
		if old, _ := os.ReadFile(src); string(old) == aptSources {
			if st, err := os.Stat(filepath.Join(a.dir, "lists", "updated")); err == nil && time.Since(st.ModTime()) < 24*time.Hour {
				return
			}
		}
		if a.err = os.WriteFile(src, []byte(aptSources), 0o644); a.err != nil {
			return
		}
		fmt.Println("apt-get update (bookworm, bullseye; amd64, arm64)")
		cmd := exec.Command("apt-get", append(a.options(), "update")...)
		if b, err := cmd.CombinedOutput(); err != nil {
			a.err = fmt.Errorf("apt-get update: %v: %s", err, b)
			return
		}
		a.err = os.WriteFile(filepath.Join(a.dir, "lists", "updated"), nil, 0o644)
	})
	return a.err
}

// search lists the packages whose names match the glob pattern, newest
// first.
func (a *apt) search(pattern string) ([]string, error) {
	if err := a.update(); err != nil {
		return nil, err
	}
	out, err := exec.Command("apt-cache", append(a.options(), "search", "--names-only", "^"+globToRegexp(pattern)+"$")...).Output()
	if err != nil {
		return nil, fmt.Errorf("apt-cache search %s: %w", pattern, err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, ok := strings.Cut(line, " "); ok {
			names = append(names, name)
		}
	}
	sort.Slice(names, func(i, j int) bool { return versionLess(names[j], names[i]) })
	return names, nil
}

// download fetches packages (name or name:arch) into dir and unpacks
// each there.
func (a *apt) download(dir string, pkgs ...string) error {
	if err := a.update(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	dl := exec.Command("apt-get", append(a.options(), append([]string{"download"}, pkgs...)...)...)
	dl.Dir = dir
	if b, err := dl.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %v: %s", strings.Join(pkgs, " "), err, strings.TrimSpace(string(b)))
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if len(debs) != len(pkgs) {
		return fmt.Errorf("apt-get download %s gave %d packages", strings.Join(pkgs, " "), len(debs))
	}
	for _, deb := range debs {
		if b, err := exec.Command("dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
			return fmt.Errorf("dpkg-deb -x %s: %v: %s", filepath.Base(deb), err, b)
		}
		os.Remove(deb)
	}
	return nil
}
