// SPDX-License-Identifier: Apache-2.0

package probe

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/procfs"
)

// record lays out a kernel record the way the BPF side writes it: the
// part of struct event its kind carries (bpf/nstrace.h), then the tail.
func record(r nstraceEvent, tail []byte) []byte {
	carried := recordSize
	if r.Flags&flagAncestors == 0 {
		switch r.Kind {
		case uint32(nstraceNstKindNST_EV_EXEC), uint32(nstraceNstKindNST_EV_EXIT), uint32(nstraceNstKindNST_EV_UNTRACKED):
			carried = int(unsafe.Offsetof(r.FlagsRaw))
		case uint32(nstraceNstKindNST_EV_FORK), uint32(nstraceNstKindNST_EV_CLONE):
			carried = int(unsafe.Offsetof(r.Fd))
			if r.Flags&flagChildNSInherited != 0 {
				carried = int(unsafe.Offsetof(r.FlagsRaw))
			}
		}
	}
	full := make([]byte, recordSize)
	*(*nstraceEvent)(unsafe.Pointer(&full[0])) = r
	return append(full[:carried:carried], tail...)
}

func comm(s string) (c [16]int8) {
	putString(c[:], s)
	return c
}

// putString writes s NUL-terminated into a C char array.
func putString(dst []int8, s string) {
	for i := 0; i < len(s) && i < len(dst)-1; i++ {
		dst[i] = int8(s[i])
	}
}

func TestRecordSizeMatchesC(t *testing.T) {
	// 6 u64, 24 u32, two arrays of 10 u32, comm[16] and comm_new[16]:
	// bpf/nstrace.h.
	if want := 6*8 + 24*4 + 2*10*4 + 2*16; recordSize != want {
		t.Fatalf("record is %d bytes, bpf/nstrace.h lays out %d", recordSize, want)
	}
	// The fields every record carries, then exec's, exit's and
	// untracked's (2 u64, 6 u32), then fork's and clone's (1 u64 and
	// ns_other).
	if want := 3*8 + 10*4 + 10*4 + 16 + 2*8 + 6*4; shortSize != want {
		t.Errorf("exec and exit records carry %d bytes, bpf/nstrace.h lays out %d", shortSize, want)
	}
	if want := shortSize + 8 + 10*4; forkSize != want {
		t.Errorf("fork records carry %d bytes, bpf/nstrace.h lays out %d", forkSize, want)
	}
	if kindOffset != int(unsafe.Offsetof(nstraceCgroupEvent{}.Kind)) {
		t.Fatal("struct event and struct cgroup_event keep kind at different offsets")
	}
}

func TestDecodeExec(t *testing.T) {
	r := nstraceEvent{
		TsNs: 5_000_000_000, Kind: uint32(nstraceNstKindNST_EV_EXEC), Pid: 42, Tid: 42, Ppid: 1, Nspid: 1,
		Uid: 1000, Gid: 100, CgroupId: 77, Comm: comm("sh"),
		FilenameLen: 7, ArgsLen: 14, Flags: flagArgsTruncated,
	}
	for i := range r.Ns {
		r.Ns[i] = 4026531830 + uint32(i)
	}
	raw := record(r, []byte("/bin/sh"+"sh\x00-c\x00echo hi\x00"))
	var d Decoder
	d.clock.offset, d.clock.taken = int64(1_700_000_000*time.Second), time.Now()
	var e event.Event
	if err := d.Decode(raw, &e); err != nil {
		t.Fatal(err)
	}
	if e.Kind != event.Exec || e.PID != 42 || e.NSPID != 1 || e.UID != 1000 || e.GID != 100 || e.CgroupID != 77 {
		t.Errorf("decoded %+v", e)
	}
	if string(e.Comm) != "sh" || string(e.Filename) != "/bin/sh" {
		t.Errorf("comm %q filename %q", e.Comm, e.Filename)
	}
	want := []string{"sh", "-c", "echo hi"}
	if len(e.Args) != len(want) {
		t.Fatalf("args %q", e.Args)
	}
	for i := range want {
		if string(e.Args[i]) != want[i] {
			t.Errorf("arg %d %q, want %q", i, e.Args[i], want[i])
		}
	}
	if !e.ArgsTruncated || e.FilenameTruncated {
		t.Errorf("truncation flags %v %v", e.ArgsTruncated, e.FilenameTruncated)
	}
	if e.NS[ns.UTS] != 4026531839 || e.NS[ns.Cgroup] != 4026531830 {
		t.Errorf("ns %v", e.NS)
	}
	if got := e.Time.Unix(); got != 1_700_000_005 {
		t.Errorf("time %v (unix %d)", e.Time, got)
	}
}

func TestDecodeExit(t *testing.T) {
	cases := []struct {
		status    uint32
		code, sig int
		core      bool
	}{
		{7 << 8, 7, 0, false},
		{9, 0, 9, false},
		{11 | 0x80, 0, 11, true},
		{0, 0, 0, false},
	}
	for _, c := range cases {
		var e event.Event
		var d Decoder
		if err := d.Decode(record(nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_EXIT), ExitStatus: c.status, DurationNs: 1500}, nil), &e); err != nil {
			t.Fatal(err)
		}
		if e.ExitCode != c.code || e.Signal != c.sig || e.CoreDumped != c.core || e.Duration != 1500 {
			t.Errorf("status %#x: code %d sig %d core %v", c.status, e.ExitCode, e.Signal, e.CoreDumped)
		}
	}
}

func TestDecodeForkAndSetns(t *testing.T) {
	var d Decoder
	var e event.Event
	r := nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_FORK), Pid: 10, ChildPid: 11, ChildNspid: 1}
	r.Ns[ns.Pid] = 100
	r.NsOther[ns.Pid] = 200
	if err := d.Decode(record(r, nil), &e); err != nil {
		t.Fatal(err)
	}
	if e.ChildPID != 11 || e.ChildNSPID != 1 || e.ChildNS[ns.Pid] != 200 {
		t.Errorf("fork %+v", e)
	}
	// A child in its parent's namespaces: the record does not carry
	// them, and the child's pid namespace is the parent's for children.
	r = nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_FORK), Flags: flagChildNSInherited, Pid: 10, ChildPid: 12, ChildNspid: 12}
	for i := range r.Ns {
		r.Ns[i] = 4026531830 + uint32(i)
	}
	r.Ns[ns.PidForChildren] = 4026532000
	if err := d.Decode(record(r, nil), &e); err != nil {
		t.Fatal(err)
	}
	want := e.NS
	want[ns.Pid] = 4026532000
	if e.ChildPID != 12 || e.ChildNS != want || e.NS[ns.Pid] != 4026531834 {
		t.Errorf("fork in the parent's namespaces: child %v, parent %v", e.ChildNS, e.NS)
	}
	r = nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_SETNS), Fd: -1, Ret: -9, FlagsRaw: 0x40000000, TargetNs: 55, TargetType: 0x40000000}
	r.NsOther[ns.Net] = 1
	r.Ns[ns.Net] = 2
	if err := d.Decode(record(r, nil), &e); err != nil {
		t.Fatal(err)
	}
	if e.FD != -1 || e.Ret != -9 || e.TargetNS != 55 || e.PrevNS[ns.Net] != 1 || e.NS[ns.Net] != 2 {
		t.Errorf("setns %+v", e)
	}
}

func TestDecodeRejectsBadRecords(t *testing.T) {
	var d Decoder
	var e event.Event
	if err := d.Decode(make([]byte, recordSize-1), &e); !errors.Is(err, ErrShortRecord) {
		t.Errorf("short record: %v", err)
	}
	// A byte less than the part of struct event its kind carries.
	for _, k := range []nstraceNstKind{nstraceNstKindNST_EV_EXIT, nstraceNstKindNST_EV_FORK, nstraceNstKindNST_EV_COMM} {
		raw := record(nstraceEvent{Kind: uint32(k)}, nil)
		if err := d.Decode(raw[:len(raw)-1], &e); !errors.Is(err, ErrShortRecord) {
			t.Errorf("kind %d, %d bytes: %v", k, len(raw)-1, err)
		}
	}
	if err := d.Decode(record(nstraceEvent{Kind: 99}, nil), &e); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("unknown kind: %v", err)
	}
	// The header promises more tail than there is.
	if err := d.Decode(record(nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_EXEC), FilenameLen: 10, ArgsLen: 10}, []byte("short")), &e); !errors.Is(err, ErrShortRecord) {
		t.Errorf("short tail: %v", err)
	}
	if err := d.Decode(record(nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_EXEC), FilenameLen: 0xffffffff, ArgsLen: 2}, []byte("ab")), &e); !errors.Is(err, ErrShortRecord) {
		t.Errorf("huge length: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(record(nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_EXEC), FilenameLen: 3, ArgsLen: 4}, []byte("/eea\x00b\x00")))
	f.Add(record(nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_EXIT), ExitStatus: 0x8b}, nil))
	f.Add(record(nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_SETNS)}, nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var d Decoder
		var e event.Event
		if err := d.Decode(raw, &e); err != nil {
			return
		}
		// Whatever decodes must stay inside the sample.
		n := len(e.Filename)
		for _, a := range e.Args {
			n += len(a)
		}
		if n > len(raw) {
			t.Fatalf("decoded %d bytes of strings from a %d byte sample", n, len(raw))
		}
	})
}

func BenchmarkDecodeExec(b *testing.B) {
	raw := record(nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_EXEC), FilenameLen: 11, ArgsLen: 11}, []byte("/usr/bin/shsh\x00-c\x00echo\x00"))
	var d Decoder
	var e event.Event
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Decode(raw, &e); err != nil {
			b.Fatal(err)
		}
	}
}

// The kernel record's namespace order is the Go table's: enum nst_ns in
// bpf/nstrace.h against internal/ns.
func TestRecordNamespaceOrder(t *testing.T) {
	want := map[ns.Type]nstraceNstNs{
		ns.Cgroup: nstraceNstNsNST_NS_CGROUP, ns.IPC: nstraceNstNsNST_NS_IPC, ns.Mnt: nstraceNstNsNST_NS_MNT,
		ns.Net: nstraceNstNsNST_NS_NET, ns.Pid: nstraceNstNsNST_NS_PID, ns.PidForChildren: nstraceNstNsNST_NS_PID_FOR_CHILDREN,
		ns.Time: nstraceNstNsNST_NS_TIME, ns.TimeForChildren: nstraceNstNsNST_NS_TIME_FOR_CHILDREN,
		ns.User: nstraceNstNsNST_NS_USER, ns.UTS: nstraceNstNsNST_NS_UTS,
	}
	if len(want) != int(ns.Count) || nstraceNstNsNST_NS_COUNT != nstraceNstNs(ns.Count) {
		t.Fatalf("the kernel record has %d namespace slots, internal/ns %d types", nstraceNstNsNST_NS_COUNT, ns.Count)
	}
	for typ, idx := range want {
		if nstraceNstNs(typ) != idx {
			t.Errorf("%s: Go index %d, kernel index %d", typ, typ, idx)
		}
	}
}

func TestDecodeCgroupAndLoss(t *testing.T) {
	var d Decoder
	var e event.Event
	var forgotten []uint64
	d.forget = func(ids []uint64) { forgotten = append(forgotten, ids...) }
	c := nstraceCgroupEvent{Kind: uint32(nstraceNstKindNST_EV_CGROUP), CgroupId: 9}
	putString(c.Name[:], "docker-abc.scope")
	putString(c.Parent[:], "system.slice")
	raw := make([]byte, cgroupRecordSize)
	*(*nstraceCgroupEvent)(unsafe.Pointer(&raw[0])) = c
	if err := d.Decode(raw, &e); err != errNotEvent {
		t.Fatalf("a cgroup record decoded as %v", err)
	}
	if err := d.Decode(raw[:cgroupRecordSize-1], &e); !errors.Is(err, ErrShortRecord) {
		t.Errorf("a short cgroup record: %v", err)
	}
	r := nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_FORK), CgroupId: 9, LostSeq: 3}
	if err := d.Decode(record(r, nil), &e); err != nil {
		t.Fatal(err)
	}
	if e.CgroupName != "docker-abc.scope" || e.CgroupParent != "system.slice" {
		t.Errorf("cgroup names %q %q", e.CgroupName, e.CgroupParent)
	}
	if !d.lossBefore {
		t.Error("a record whose loss count moved does not say so")
	}
	if err := d.Decode(record(r, nil), &e); err != nil || d.lossBefore {
		t.Errorf("the same loss count again: %v %v", err, d.lossBefore)
	}
	r = nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_UNTRACKED), Pid: 10, ChildPid: 11, LostSeq: 4, CgroupId: 8}
	if err := d.Decode(record(r, nil), &e); err != nil {
		t.Fatal(err)
	}
	if e.Kind != event.Lost || e.Reason != event.LostTracked || e.ChildPID != 11 || e.PID != 10 || e.Count != 1 || e.CgroupName != "" {
		t.Errorf("untracked child: %+v", e)
	}
	// Past the bound, the names are forgotten, here and in the kernel.
	for id := uint64(100); len(forgotten) == 0; id++ {
		c.CgroupId = id
		*(*nstraceCgroupEvent)(unsafe.Pointer(&raw[0])) = c
		_ = d.Decode(raw, &e)
	}
	if len(forgotten) != cgroupNamesMax || len(d.cgroups) != 1 {
		t.Errorf("forgot %d, kept %d", len(forgotten), len(d.cgroups))
	}
}

// A cgroup of the v1 hierarchy comes with its key marked: the event has
// its id and the controller, and its names are not those of the v2
// cgroup with the same id.
func TestDecodeCgroupV1(t *testing.T) {
	d := Decoder{cgroupV1: "pids"}
	var e event.Event
	raw := make([]byte, cgroupRecordSize)
	for _, c := range []struct {
		key  uint64
		name string
	}{{9, "docker-abc.scope"}, {9 | cgroupV1Key, "abc"}} {
		r := nstraceCgroupEvent{Kind: uint32(nstraceNstKindNST_EV_CGROUP), CgroupId: c.key}
		putString(r.Name[:], c.name)
		putString(r.Parent[:], "docker")
		*(*nstraceCgroupEvent)(unsafe.Pointer(&raw[0])) = r
		if err := d.Decode(raw, &e); err != errNotEvent {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		key  uint64
		v1   string
		name string
	}{{9, "", "docker-abc.scope"}, {9 | cgroupV1Key, "pids", "abc"}} {
		r := nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_EXIT), CgroupId: c.key}
		if err := d.Decode(record(r, nil), &e); err != nil {
			t.Fatal(err)
		}
		if e.CgroupID != 9 || e.CgroupV1 != c.v1 || e.CgroupName != c.name {
			t.Errorf("key %#x: cgroup %d v1 %q %q, want 9 %q %q", c.key, e.CgroupID, e.CgroupV1, e.CgroupName, c.v1, c.name)
		}
	}
}

// Every controller nstrace can read a v1 identity from has the kernel
// side's number, and only those.
func TestCgroupV1Controllers(t *testing.T) {
	seen := map[nstraceNstV1Controller]bool{}
	for _, name := range procfs.CgroupV1Controllers {
		id, err := cgroupV1ID(name)
		if err != nil || id == nstraceNstV1ControllerNST_CGV1NONE || seen[id] {
			t.Errorf("%s: %v %v", name, id, err)
		}
		seen[id] = true
	}
	if len(seen) != int(nstraceNstV1ControllerNST_CGV1CPUSET) || len(cgroupV1) != len(seen) {
		t.Errorf("%d controllers, the kernel side has %d", len(seen), nstraceNstV1ControllerNST_CGV1CPUSET)
	}
	if id, err := cgroupV1ID(""); err != nil || id != nstraceNstV1ControllerNST_CGV1NONE {
		t.Errorf("none: %v %v", id, err)
	}
	if _, err := cgroupV1ID("name=systemd"); err == nil {
		t.Error("a named hierarchy was taken")
	}
	f := Filter{Cgroups: []uint64{5}, CgroupsV1: []uint64{5}}
	if k := f.cgroupKeys(); len(k) != 2 || k[0] != 5 || k[1] != 5|1<<63 {
		t.Errorf("filter keys %#x", k)
	}
}

// Cgroup v1 settings that cannot work are refused before anything is
// loaded.
func TestOpenChecksCgroupV1(t *testing.T) {
	exec := event.KindSet(0).Add(event.Exec)
	for _, c := range []struct {
		opts Options
		want string
	}{
		{Options{Kinds: exec, Filter: Filter{CgroupsV1: []uint64{5}}}, "a cgroup v1 filter needs the cgroup v1 controller"},
		{Options{Kinds: exec, CgroupV1: "name=systemd", CgroupV1Hierarchy: 1}, `cgroup v1 controller "name=systemd"`},
		{Options{Kinds: exec, CgroupV1: "pids"}, "cgroup v1 controller pids: the id of its hierarchy is needed"},
	} {
		if _, err := Open(c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.opts, err, c.want)
		}
	}
	ok := Options{Kinds: exec, CgroupV1: "pids", CgroupV1Hierarchy: 8, Filter: Filter{CgroupsV1: []uint64{5}}}
	if err := ok.checkCgroupV1(); err != nil {
		t.Errorf("a v1 filter with its controller: %v", err)
	}
}

func TestWallClockIsBootTimePlusOffset(t *testing.T) {
	var c wallClock
	var boot unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot)
	got := c.wall(uint64(boot.Nano()))
	if d := time.Since(got); d < -time.Second || d > time.Second {
		t.Errorf("a boot-clock stamp of now reads %v, %v from now", got, d)
	}
}

func TestDecodeNewKinds(t *testing.T) {
	var d Decoder
	var e event.Event
	r := nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_COMM), Pid: 5, Tid: 6, Comm: comm("sh"), CommNew: comm("worker")}
	if err := d.Decode(record(r, nil), &e); err != nil {
		t.Fatal(err)
	}
	if e.Kind != event.Comm || string(e.Comm) != "sh" || string(e.CommNew) != "worker" || e.TID != 6 {
		t.Errorf("comm %+v", e)
	}
	r = nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_UID), Uid: 1000, Euid: 0, Gid: 5, Egid: 6, OldUid: 0, OldEuid: 0, OldGid: 1, OldEgid: 2, Ret: 0}
	if err := d.Decode(record(r, nil), &e); err != nil {
		t.Fatal(err)
	}
	if e.Kind != event.UID || e.UID != 1000 || e.EUID != 0 || e.GID != 5 || e.EGID != 6 || e.OldGID != 1 || e.OldEGID != 2 {
		t.Errorf("uid %+v", e)
	}
	r = nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_PTRACE), FlagsRaw: 16, TargetPid: 77, Ret: -1}
	if err := d.Decode(record(r, nil), &e); err != nil {
		t.Fatal(err)
	}
	if e.Kind != event.Ptrace || e.FlagsRaw != 16 || e.TargetPID != 77 || e.Ret != -1 {
		t.Errorf("ptrace %+v", e)
	}
	r = nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_SID), Ret: 4242}
	if err := d.Decode(record(r, nil), &e); err != nil || e.Kind != event.SID || e.Ret != 4242 {
		t.Errorf("sid %+v %v", e, err)
	}
	// A failed exec: the file it tried, no argv, the errno.
	r = nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_EXEC), FilenameLen: 4, Ret: -2}
	if err := d.Decode(record(r, []byte("/nop")), &e); err != nil || string(e.Filename) != "/nop" || e.Ret != -2 || len(e.Args) != 0 {
		t.Errorf("failed exec %+v %v", e, err)
	}
}

func TestDecodeAncestors(t *testing.T) {
	anc := make([]byte, ancestorsSize)
	for i, a := range []nstraceAncestor{{Pid: 9, Nspid: 1, PidNs: 300, Comm: comm("runc:[2:INIT]")}, {Pid: 8, Nspid: 8, PidNs: 100, Comm: comm("shim")}} {
		*(*nstraceAncestor)(unsafe.Pointer(&anc[i*ancestorSize])) = a
	}
	r := nstraceEvent{Kind: uint32(nstraceNstKindNST_EV_EXEC), Flags: flagAncestors, Ancestors: 2, FilenameLen: 3, ArgsLen: 3}
	var d Decoder
	var e event.Event
	if err := d.Decode(record(r, append(anc, "/sh"+"sh\x00"...)), &e); err != nil {
		t.Fatal(err)
	}
	if len(e.Ancestors) != 2 || e.Ancestors[0].PID != 9 || e.Ancestors[0].NSPID != 1 || e.Ancestors[0].PidNS != 300 ||
		string(e.Ancestors[0].Comm) != "runc:[2:INIT]" || string(e.Ancestors[1].Comm) != "shim" {
		t.Errorf("ancestors %+v", e.Ancestors)
	}
	if string(e.Filename) != "/sh" || len(e.Args) != 1 || string(e.Args[0]) != "sh" {
		t.Errorf("exec after ancestors: %q %q", e.Filename, e.Args)
	}
	// Too short a tail, or more ancestors than slots: refused.
	if err := d.Decode(record(r, anc[:ancestorSize]), &e); !errors.Is(err, ErrShortRecord) {
		t.Errorf("short ancestors: %v", err)
	}
	r.Ancestors = ancestorsMax + 1
	if err := d.Decode(record(r, anc), &e); !errors.Is(err, ErrShortRecord) {
		t.Errorf("too many ancestors: %v", err)
	}
}

// The ancestor slots the decoder expects are those the BPF side sizes:
// its scratch record is an event with NST_ANCESTORS_MAX ancestors.
func TestAncestorSlotsMatchC(t *testing.T) {
	spec, err := loadNstrace()
	if err != nil {
		t.Fatal(err)
	}
	if got := int(spec.Maps["scratch"].ValueSize); got != recordSize+ancestorsSize {
		t.Errorf("scratch value is %d bytes, the decoder expects %d + %d", got, recordSize, ancestorsSize)
	}
}
