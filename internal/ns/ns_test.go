// SPDX-License-Identifier: Apache-2.0

package ns

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestTypeNames(t *testing.T) {
	want := []string{"cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "time_for_children", "user", "uts"}
	for i, n := range want {
		if Type(i).String() != n {
			t.Errorf("%d: %s, want %s", i, Type(i), n)
		}
		if typ, ok := Parse(n); !ok || typ != Type(i) {
			t.Errorf("Parse(%s) = %d %v", n, typ, ok)
		}
	}
	if _, ok := Parse("bogus"); ok {
		t.Error("Parse accepted bogus")
	}
}

func TestEveryNamespaceBit(t *testing.T) {
	bits := map[uint64]Type{
		unix.CLONE_NEWCGROUP: Cgroup, unix.CLONE_NEWIPC: IPC, unix.CLONE_NEWNS: Mnt,
		unix.CLONE_NEWNET: Net, unix.CLONE_NEWPID: Pid, unix.CLONE_NEWTIME: Time,
		unix.CLONE_NEWUSER: User, unix.CLONE_NEWUTS: UTS,
	}
	for bit, typ := range bits {
		if got := CloneFlagNames(bit); !slices.Equal(got, []string{typ.String()}) {
			t.Errorf("CloneFlagNames(%#x) = %v, want [%s]", bit, got, typ)
		}
		if got := CloneFlagName(bit); got != typ.String() {
			t.Errorf("CloneFlagName(%#x) = %s", bit, got)
		}
		if got, ok := OfCloneFlag(bit); !ok || got != typ {
			t.Errorf("OfCloneFlag(%#x) = %v %v", bit, got, ok)
		}
		if typ.CloneFlag() != bit {
			t.Errorf("%s.CloneFlag() = %#x", typ, typ.CloneFlag())
		}
	}
	if PidForChildren.CloneFlag() != unix.CLONE_NEWPID || TimeForChildren.CloneFlag() != unix.CLONE_NEWTIME {
		t.Error("the *_for_children types share their namespace's bit")
	}
	if CloneFlagName(0) != "unknown" || CloneFlagName(1<<40) != "0x10000000000" {
		t.Errorf("CloneFlagName of 0 and a stray bit: %s %s", CloneFlagName(0), CloneFlagName(1<<40))
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
		{unix.CLONE_NEWNET | 1<<40, []string{"net", "0x10000000000"}},
		{0, nil},
	}
	for _, c := range cases {
		if got := CloneFlagNames(c.raw); !slices.Equal(got, c.want) {
			t.Errorf("CloneFlagNames(%#x) = %v, want %v", c.raw, got, c.want)
		}
	}
	quoted := string(AppendCloneFlags(nil, unix.CLONE_NEWNET|unix.CLONE_VM, ",", func(b []byte, s string) []byte {
		return append(append(append(b, '"'), s...), '"')
	}))
	if quoted != `"net","CLONE_VM"` {
		t.Errorf("AppendCloneFlags: %s", quoted)
	}
}

func TestMask(t *testing.T) {
	var a, b Set
	a[Net], b[Net] = 1, 2
	a[UTS], b[UTS] = 3, 3
	a[Mnt], b[Mnt] = 4, 0
	m := Changed(&a, &b)
	if !slices.Equal(m.Types(), []Type{Net}) || !m.Has(Net) || m.Has(UTS) {
		t.Errorf("Changed: %v", m.Types())
	}
	if !Differs(&a, &b) {
		t.Error("Differs missed net")
	}
	b[Net] = 1
	if Differs(&a, &b) {
		t.Error("an unknown inode is no difference")
	}
	if MaskOf(Net, Pid) != 1<<Net|1<<Pid || All.Types()[Count-1] != UTS {
		t.Error("MaskOf/All")
	}
}

func TestParseLink(t *testing.T) {
	for in, want := range map[string]uint64{"net:[4026531840]": 4026531840, "pid_for_children:[1]": 1} {
		if _, got, ok := ParseLink(in); !ok || got != want {
			t.Errorf("ParseLink(%q) = %d %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "net:", "net:[x]", "[1]", "net:[1", ":[1]"} {
		if _, _, ok := ParseLink(in); ok {
			t.Errorf("ParseLink(%q) accepted", in)
		}
	}
	if FormatLink(Net, 7) != "net:[7]" {
		t.Error("FormatLink")
	}
}
