// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"io"
	"os"
	"path"
	"sort"
)

// initramfs is a cpio "newc" archive being built: the kernel unpacks it
// as the guest's root file system.
type initramfs struct {
	entries map[string]entry
}

type entry struct {
	mode uint32
	data []byte // file contents, or a symlink's target
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
)

func newInitramfs() *initramfs { return &initramfs{entries: map[string]entry{}} }

func (r *initramfs) dir(p string) {
	for p != "/" && p != "." && p != "" {
		if _, ok := r.entries[p]; !ok {
			r.entries[p] = entry{mode: modeDir | 0o755}
		}
		p = path.Dir(p)
	}
}

func (r *initramfs) file(p string, data []byte, perm uint32) {
	r.dir(path.Dir(p))
	r.entries[p] = entry{mode: modeFile | perm, data: data}
}

func (r *initramfs) symlink(p, target string) {
	r.dir(path.Dir(p))
	r.entries[p] = entry{mode: modeLink | 0o777, data: []byte(target)}
}

// copyFile adds the host file src at dst, following symlinks.
func (r *initramfs) copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	r.file(dst, b, uint32(st.Mode().Perm()))
	return nil
}

func (r *initramfs) write(w io.Writer) error {
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	sort.Strings(names) // parents before children
	ino := 1
	put := func(name string, e entry) error {
		nameZ := name + "\x00"
		hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			ino, e.mode, 0, 0, 1, 0, len(e.data), 0, 0, 0, 0, len(nameZ), 0)
		ino++
		buf := []byte(hdr + nameZ)
		buf = append(buf, make([]byte, pad4(len(buf)))...)
		buf = append(buf, e.data...)
		buf = append(buf, make([]byte, pad4(len(e.data)))...)
		_, err := w.Write(buf)
		return err
	}
	for _, n := range names {
		if err := put(n[1:], r.entries[n]); err != nil { // names without the leading /
			return err
		}
	}
	return put("TRAILER!!!", entry{})
}

func pad4(n int) int { return (4 - n%4) % 4 }
