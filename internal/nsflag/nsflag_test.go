// SPDX-License-Identifier: Apache-2.0

package nsflag

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestEveryNamespaceBit(t *testing.T) {
	bits := map[uint64]string{
		unix.CLONE_NEWCGROUP: "cgroup", unix.CLONE_NEWIPC: "ipc", unix.CLONE_NEWNS: "mnt",
		unix.CLONE_NEWNET: "net", unix.CLONE_NEWPID: "pid", unix.CLONE_NEWTIME: "time",
		unix.CLONE_NEWUSER: "user", unix.CLONE_NEWUTS: "uts",
	}
	for bit, name := range bits {
		if got := Clone(bit); !slices.Equal(got, []string{name}) {
			t.Errorf("Clone(%#x) = %v, want [%s]", bit, got, name)
		}
		if got := NSType(bit); !slices.Equal(got, []string{name}) {
			t.Errorf("NSType(%#x) = %v", bit, got)
		}
		if got := TypeName(bit); got != name {
			t.Errorf("TypeName(%#x) = %s", bit, got)
		}
		if v, ok := ParseNS(name); !ok || v != bit {
			t.Errorf("ParseNS(%s) = %#x", name, v)
		}
	}
}

func TestCombinations(t *testing.T) {
	cases := []struct {
		raw  uint64
		want []string
	}{
		{unix.CLONE_NEWNET | unix.CLONE_NEWUTS, []string{"net", "uts"}},
		{unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET | unix.CLONE_NEWPID,
			[]string{"ipc", "mnt", "net", "pid", "uts"}},
		{unix.CLONE_FILES | unix.CLONE_FS | unix.CLONE_SYSVSEM | unix.CLONE_NEWCGROUP, []string{"cgroup", "CLONE_FS", "CLONE_FILES", "CLONE_SYSVSEM"}},
		{unix.CLONE_VM | unix.CLONE_VFORK | unix.CLONE_NEWUSER | unix.CLONE_NEWTIME, []string{"time", "user", "CLONE_VM", "CLONE_VFORK"}},
		{1 << 40, []string{"0x10000000000"}},
		{0, nil},
	}
	for _, c := range cases {
		if got := Clone(c.raw); !slices.Equal(got, c.want) {
			t.Errorf("Clone(%#x) = %v, want %v", c.raw, got, c.want)
		}
	}
	if got := NSType(0); !slices.Equal(got, []string{"any"}) {
		t.Errorf("NSType(0) = %v, want [any]", got)
	}
	if _, ok := ParseNS("net,bogus"); ok {
		t.Error("ParseNS accepted bogus")
	}
}

func TestErrno(t *testing.T) {
	for ret, want := range map[int64]string{-1: "EPERM", -9: "EBADF", -22: "EINVAL", 0: "", 5: "", -4000: "E4000"} {
		if got := Errno(ret); got != want {
			t.Errorf("Errno(%d) = %q, want %q", ret, got, want)
		}
	}
}
