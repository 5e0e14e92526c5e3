// SPDX-License-Identifier: Apache-2.0

package main

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// Tools the tests run, with their libraries; busybox provides the rest
// (sleep, true, ps, cp, env, mount, poweroff...). Debian's sh (dash)
// replaces busybox's, whose built-in applets would not exec as the tests
// expect.
var guestTools = []string{"unshare", "nsenter", "lsns", "setpriv", "taskset", "ip", "runc", "sh", "promtool"}

// guestPackages hold the tools above and the libraries they load, for a
// guest of another architecture than the host's: fetched with apt-get
// download and unpacked, never installed.
var guestPackages = []string{
	"busybox-static", "dash", "libc6",
	"util-linux", "libcap-ng0", "libsmartcols1", "libmount1", "libblkid1", "libselinux1", "libpcre2-8-0",
	"iproute2", "libbpf1", "libelf1", "libmnl0", "libbsd0", "libmd0", "libcap2", "zlib1g",
	"runc", "libseccomp2",
	"prometheus",
}

// userland is where a guest's programs come from: the host's root for
// the host's architecture, a tree of unpacked packages for another.
type userland struct {
	root    string // "/" or the unpacked tree
	triplet string // the multiarch directory: x86_64-linux-gnu
}

// hostUserland is the host's own programs.
func hostUserland(a arch) *userland { return &userland{root: "/", triplet: a.triplet} }

// fetchUserland unpacks guestPackages for a into dir, once.
func fetchUserland(ap *apt, a arch, dir string) (*userland, error) {
	u := &userland{root: dir, triplet: a.triplet}
	stamp := filepath.Join(dir, ".packages")
	want := strings.Join(guestPackages, " ")
	if b, err := os.ReadFile(stamp); err == nil && string(b) == want {
		return u, nil
	}
	os.RemoveAll(dir)
	pkgs := make([]string, len(guestPackages))
	for i, p := range guestPackages {
		pkgs[i] = p + ":" + a.deb
	}
	fmt.Printf("fetching %s tools: %s\n", a.deb, want)
	if err := ap.download(dir, pkgs...); err != nil {
		return nil, err
	}
	return u, os.WriteFile(stamp, []byte(want), 0o644)
}

// busybox finds a static busybox.
func (u *userland) busybox() (string, error) {
	if u.root == "/" {
		p, err := exec.LookPath("busybox")
		if err != nil {
			return "", errors.New("busybox is needed (apt-get install busybox-static)")
		}
		return p, nil
	}
	return u.find("/bin/busybox")
}

// tool finds a program by name: on the host through PATH, in a tree at
// the place the host's copy has.
func (u *userland) tool(name string) (string, error) {
	hostPath, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s is needed on the host", name)
	}
	if u.root == "/" {
		return filepath.EvalSymlinks(hostPath)
	}
	if p, err := u.find(hostPath); err == nil {
		return p, nil
	}
	if real, err := filepath.EvalSymlinks(hostPath); err == nil {
		return u.find(real)
	}
	return "", fmt.Errorf("%s: not in the %s packages", name, u.triplet)
}

// find resolves p inside the tree, following symlinks there, and
// trying /usr/bin for /bin and the reverse (merged /usr or not).
func (u *userland) find(p string) (string, error) {
	alt := "/usr" + p
	if rest, ok := strings.CutPrefix(p, "/usr"); ok {
		alt = rest
	}
	for _, c := range []string{p, alt} {
		if real, ok := u.resolve(c, 0); ok {
			return real, nil
		}
	}
	return "", fmt.Errorf("%s not found under %s", p, u.root)
}

// resolve follows the symlinks of guest path p within the tree and
// returns the host path of the file it ends at.
func (u *userland) resolve(p string, depth int) (string, bool) {
	if depth > 16 {
		return "", false
	}
	parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	cur := "/"
	for i, part := range parts {
		next := path.Join(cur, part)
		host := filepath.Join(u.root, next)
		st, err := os.Lstat(host)
		if err != nil {
			return "", false
		}
		if st.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(host)
			if err != nil {
				return "", false
			}
			if !path.IsAbs(target) {
				target = path.Join(cur, target)
			}
			return u.resolve(path.Join(append([]string{target}, parts[i+1:]...)...), depth+1)
		}
		cur = next
	}
	return filepath.Join(u.root, cur), true
}

// libs lists the guest paths and host files of the libraries and the
// loader an executable needs, transitively.
func (u *userland) libs(exe string) (map[string]string, error) {
	out := map[string]string{}
	var walk func(file, who string) error
	walk = func(file, who string) error {
		f, err := elf.Open(file)
		if err != nil {
			return fmt.Errorf("reading %s: %w", who, err)
		}
		defer f.Close()
		for _, prog := range f.Progs {
			if prog.Type != elf.PT_INTERP {
				continue
			}
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				return err
			}
			interp := strings.TrimRight(string(b), "\x00")
			real, err := u.find(interp)
			if err != nil {
				return fmt.Errorf("%s, the loader of %s: %w", interp, who, err)
			}
			out[interp] = real
		}
		needed, _ := f.ImportedLibraries() // none for a static executable
		for _, soname := range needed {
			guest, real, err := u.library(soname)
			if err != nil {
				return fmt.Errorf("%s, needed by %s: %w", soname, who, err)
			}
			if _, seen := out[guest]; seen {
				continue
			}
			out[guest] = real
			if err := walk(real, soname); err != nil {
				return err
			}
		}
		return nil
	}
	return out, walk(exe, filepath.Base(exe))
}

// library finds a shared library where the loader looks by default.
func (u *userland) library(soname string) (string, string, error) {
	for _, dir := range []string{"/lib/" + u.triplet, "/usr/lib/" + u.triplet, "/lib", "/usr/lib"} {
		guest := path.Join(dir, soname)
		if real, ok := u.resolve(guest, 0); ok {
			return guest, real, nil
		}
	}
	return "", "", fmt.Errorf("not found under %s (add its package to guestPackages)", u.root)
}
