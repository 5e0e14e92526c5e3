// SPDX-License-Identifier: Apache-2.0

package probe

import (
	"bytes"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/ns"
)

// kinds maps the record's enum nst_kind to the event kind.
var kinds = [...]event.Kind{
	nstraceNstKindNST_EV_FORK:      event.Fork,
	nstraceNstKindNST_EV_EXEC:      event.Exec,
	nstraceNstKindNST_EV_EXIT:      event.Exit,
	nstraceNstKindNST_EV_CLONE:     event.Clone,
	nstraceNstKindNST_EV_UNSHARE:   event.Unshare,
	nstraceNstKindNST_EV_SETNS:     event.Setns,
	nstraceNstKindNST_EV_UNTRACKED: event.Lost,
	nstraceNstKindNST_EV_COMM:      event.Comm,
	nstraceNstKindNST_EV_UID:       event.UID,
	nstraceNstKindNST_EV_SID:       event.SID,
	nstraceNstKindNST_EV_PTRACE:    event.Ptrace,
}

// ancestorSize is one struct ancestor; a record that carries them has
// NST_ANCESTORS_MAX slots after its fixed part.
const (
	ancestorSize  = int(unsafe.Sizeof(nstraceAncestor{}))
	ancestorsMax  = 8
	ancestorsSize = ancestorsMax * ancestorSize
)

// cgroupRecordSize is the size of a cgroup names record.
const cgroupRecordSize = int(unsafe.Sizeof(nstraceCgroupEvent{}))

// kindOffset is where every record layout keeps its kind; an event's
// flags follow it.
const (
	kindOffset  = int(unsafe.Offsetof(nstraceEvent{}.Kind))
	flagsOffset = int(unsafe.Offsetof(nstraceEvent{}.Flags))
)

// errNotEvent says a record was for the reader, not an event: a cgroup's
// names (kept by the decoder), or a wake-up.
var errNotEvent = errors.New("not an event")

// cgroupNamesMax bounds the cgroups whose names the decoder keeps; past
// it, they are forgotten here and in the kernel, which sends them again.
const cgroupNamesMax = 16384

type cgroupNames struct{ name, parent string }

// Record flags, from enum nst_flag.
const (
	flagArgsTruncated     = uint32(nstraceNstFlagNST_F_ARGS_TRUNCATED)
	flagFilenameTruncated = uint32(nstraceNstFlagNST_F_FILENAME_TRUNCATED)
	flagArgsUnreadable    = uint32(nstraceNstFlagNST_F_ARGS_UNREADABLE)
	flagCompat            = uint32(nstraceNstFlagNST_F_COMPAT)
	flagAncestors         = uint32(nstraceNstFlagNST_F_ANCESTORS)
	flagChildNSInherited  = uint32(nstraceNstFlagNST_F_CHILD_NS_INHERITED)
)

// recordSize is all of struct event. A record carries it up to the end of
// its kind's fields (bpf/nstrace.h): exec, exit and untracked records up
// to flags_raw (shortSize), fork and clone records up to fd (forkSize) or,
// when the child's namespaces are its parent's, as far as exec's; the
// others and every record with ancestors all of it. Exec records
// carry the filename and argv after that fixed part.
const (
	recordSize = int(unsafe.Sizeof(nstraceEvent{}))
	shortSize  = int(unsafe.Offsetof(nstraceEvent{}.FlagsRaw))
	forkSize   = int(unsafe.Offsetof(nstraceEvent{}.Fd))
)

// fixedSize is how much of struct event a record of this kind carries.
func fixedSize(kind, flags uint32) int {
	if flags&flagAncestors != 0 {
		return recordSize
	}
	switch kind {
	case uint32(nstraceNstKindNST_EV_EXEC), uint32(nstraceNstKindNST_EV_EXIT), uint32(nstraceNstKindNST_EV_UNTRACKED):
		return shortSize
	case uint32(nstraceNstKindNST_EV_FORK), uint32(nstraceNstKindNST_EV_CLONE):
		if flags&flagChildNSInherited != 0 {
			return shortSize
		}
		return forkSize
	}
	return recordSize
}

// Errors for samples that cannot be decoded.
var (
	ErrShortRecord = errors.New("short record")
	ErrUnknownKind = errors.New("unknown record kind")
)

// Decoder turns raw ring buffer samples into events. It reuses its own
// storage: an event it fills is valid until the next call.
type Decoder struct {
	clock     wallClock
	args      [][]byte
	ancestors []event.Ancestor
	// short holds a record that carries less than all of struct event,
	// the rest zero.
	short   nstraceEvent
	cgroups map[uint64]cgroupNames // by key (enum nst_cgroup_key)
	// forget is called with the cgroup keys dropped from cgroups.
	forget func([]uint64)
	// cgroupV1 is the controller whose v1 hierarchy the keys marked so
	// (cgroupV1Key) are of.
	cgroupV1 string
	// lossSeq is the kernel's loss count as of the last record or check;
	// lossBefore says the last record found it changed.
	lossSeq    uint64
	lossBefore bool
}

// seenLoss records the kernel's loss count and reports whether it moved.
func (d *Decoder) seenLoss(seq uint64) bool {
	moved := seq != d.lossSeq
	d.lossSeq = seq
	return moved
}

// Decode fills e from raw. e's byte slices point into raw.
func (d *Decoder) Decode(raw []byte, e *event.Event) error {
	if len(raw) >= kindOffset+4 {
		switch *(*uint32)(unsafe.Pointer(&raw[kindOffset])) {
		case uint32(nstraceNstKindNST_EV_CGROUP):
			return d.cgroupRecord(raw)
		case uint32(nstraceNstKindNST_EV_WAKE):
			return errNotEvent
		}
	}
	if len(raw) < shortSize {
		return fmt.Errorf("%w: %d bytes, want at least %d", ErrShortRecord, len(raw), shortSize)
	}
	// The record is read with the host's byte order (binary.NativeEndian)
	// and layout: bpf2go generated nstraceEvent from the same C definition.
	// A copy through unsafe avoids a reflective decode per event.
	fixed := fixedSize(*(*uint32)(unsafe.Pointer(&raw[kindOffset])), *(*uint32)(unsafe.Pointer(&raw[flagsOffset])))
	if len(raw) < fixed {
		return fmt.Errorf("%w: %d bytes, want at least %d", ErrShortRecord, len(raw), fixed)
	}
	var r *nstraceEvent
	if len(raw) >= recordSize {
		r = (*nstraceEvent)(unsafe.Pointer(unsafe.SliceData(raw)))
	} else {
		d.short = nstraceEvent{}
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&d.short)), recordSize), raw[:fixed])
		r = &d.short
	}

	if int(r.Kind) >= len(kinds) || kinds[r.Kind] == 0 {
		return fmt.Errorf("%w %d", ErrUnknownKind, r.Kind)
	}
	d.lossBefore = d.seenLoss(r.LostSeq)
	*e = event.Event{
		Kind:     kinds[r.Kind],
		Time:     d.clock.wall(r.TsNs),
		PID:      r.Pid,
		TID:      r.Tid,
		PPID:     r.Ppid,
		NSPID:    r.Nspid,
		UID:      r.Uid,
		GID:      r.Gid,
		Comm:     cString(raw[unsafe.Offsetof(r.Comm):][:len(r.Comm)]),
		CgroupID: r.CgroupId &^ cgroupV1Key,
		NS:       widen(&r.Ns),
		Compat:   r.Flags&flagCompat != 0,
		EUID:     r.Euid,
		EGID:     r.Egid,
	}
	if r.CgroupId&cgroupV1Key != 0 {
		e.CgroupV1 = d.cgroupV1
	}
	if c, ok := d.cgroups[r.CgroupId]; ok {
		e.CgroupName, e.CgroupParent = c.name, c.parent
	}
	tail := raw[fixed:]
	if r.Flags&flagAncestors != 0 {
		if len(tail) < ancestorsSize || r.Ancestors > ancestorsMax {
			return fmt.Errorf("%w: %d bytes of ancestors, want %d", ErrShortRecord, len(tail), ancestorsSize)
		}
		d.ancestors = d.ancestors[:0]
		for i := 0; i < int(r.Ancestors); i++ {
			a := (*nstraceAncestor)(unsafe.Pointer(&tail[i*ancestorSize]))
			comm := tail[i*ancestorSize+int(unsafe.Offsetof(a.Comm)):][:len(a.Comm)]
			d.ancestors = append(d.ancestors, event.Ancestor{PID: a.Pid, NSPID: a.Nspid, PidNS: uint64(a.PidNs), Comm: cString(comm)})
		}
		e.Ancestors = d.ancestors
		tail = tail[ancestorsSize:]
	}
	switch e.Kind {
	case event.Exec:
		fl, al := int(r.FilenameLen), int(r.ArgsLen)
		if fl > len(tail) || al > len(tail)-fl {
			return fmt.Errorf("%w: exec tail of %d bytes, header says %d+%d", ErrShortRecord, len(tail), fl, al)
		}
		e.Filename = tail[:fl]
		e.FilenameTruncated = r.Flags&flagFilenameTruncated != 0
		e.ArgsTruncated = r.Flags&(flagArgsTruncated|flagArgsUnreadable) != 0
		d.args = splitArgs(d.args[:0], tail[fl:fl+al])
		e.Args = d.args
		e.Ret = r.Ret
	case event.Fork, event.Clone:
		e.ChildPID = r.ChildPid
		e.ChildNSPID = r.ChildNspid
		if r.Flags&flagChildNSInherited != 0 {
			// The parent's, but the pid namespace: the parent's for
			// children.
			e.ChildNS = e.NS
			e.ChildNS[ns.Pid] = e.NS[ns.PidForChildren]
		} else {
			e.ChildNS = widen(&r.NsOther)
		}
		e.FlagsRaw = r.FlagsRaw
		e.Ret = r.Ret
	case event.Exit:
		s := r.ExitStatus
		e.ExitCode = int(s>>8) & 0xff
		e.Signal = int(s & 0x7f)
		e.CoreDumped = s&0x80 != 0
		e.Duration = time.Duration(r.DurationNs)
	case event.Unshare, event.Setns:
		e.FlagsRaw = r.FlagsRaw
		e.Ret = r.Ret
		e.PrevNS = widen(&r.NsOther)
		e.FD = r.Fd
		e.TargetNS = uint64(r.TargetNs)
		e.TargetType = uint64(r.TargetType)
		e.TargetPID = r.TargetPid
	case event.Comm:
		e.CommNew = cString(raw[unsafe.Offsetof(r.CommNew):][:len(r.CommNew)])
	case event.UID:
		e.OldUID, e.OldEUID, e.OldGID, e.OldEGID = r.OldUid, r.OldEuid, r.OldGid, r.OldEgid
		e.Ret = r.Ret
	case event.SID:
		e.Ret = r.Ret
	case event.Ptrace:
		e.FlagsRaw, e.TargetPID, e.Ret = r.FlagsRaw, r.TargetPid, r.Ret
	case event.Lost:
		e.Reason = event.LostTracked
		e.Count = 1
		e.ChildPID = r.ChildPid
	}
	return nil
}

// cgroupRecord keeps a cgroup's names for the events that follow.
func (d *Decoder) cgroupRecord(raw []byte) error {
	if len(raw) < cgroupRecordSize {
		return fmt.Errorf("%w: cgroup record of %d bytes, want %d", ErrShortRecord, len(raw), cgroupRecordSize)
	}
	r := (*nstraceCgroupEvent)(unsafe.Pointer(unsafe.SliceData(raw)))
	d.lossBefore = d.seenLoss(r.LostSeq)
	if d.cgroups == nil {
		d.cgroups = map[uint64]cgroupNames{}
	}
	if len(d.cgroups) >= cgroupNamesMax {
		ids := make([]uint64, 0, len(d.cgroups))
		for id := range d.cgroups {
			ids = append(ids, id)
		}
		clear(d.cgroups)
		if d.forget != nil {
			d.forget(ids)
		}
	}
	d.cgroups[r.CgroupId] = cgroupNames{
		name:   string(cString(raw[unsafe.Offsetof(r.Name):][:len(r.Name)])),
		parent: string(cString(raw[unsafe.Offsetof(r.Parent):][:len(r.Parent)])),
	}
	return errNotEvent
}

// wallClock turns CLOCK_BOOTTIME stamps, which keep counting through
// suspend, into wall-clock time. The offset between the two clocks moves
// only when the wall clock is stepped, so it is taken again every second.
type wallClock struct {
	offset int64
	taken  time.Time
}

const wallClockRefresh = time.Second

func (c *wallClock) wall(boot uint64) time.Time {
	if c.taken.IsZero() || time.Since(c.taken) > wallClockRefresh {
		c.refresh()
	}
	return time.Unix(0, int64(boot)+c.offset)
}

func (c *wallClock) refresh() {
	var b0, b1, real unix.Timespec
	// The wall clock between two reads of the boot clock: the offset is
	// off by at most the time between them.
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &b0)
	_ = unix.ClockGettime(unix.CLOCK_REALTIME, &real)
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &b1)
	c.offset = real.Nano() - (b0.Nano()+b1.Nano())/2
	c.taken = time.Now()
}

// widen turns the kernel's 32-bit inode numbers into the 64-bit ones that
// stat(2) reports.
func widen(in *[ns.Count]uint32) ns.Set {
	var out ns.Set
	for i, v := range in {
		out[i] = uint64(v)
	}
	return out
}

func cString(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// splitArgs splits a NUL-separated argument vector as it lies in memory.
// A vector cut short ends without a NUL; its last piece is kept.
func splitArgs(dst [][]byte, b []byte) [][]byte {
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			return append(dst, b)
		}
		dst = append(dst, b[:i])
		b = b[i+1:]
	}
	return dst
}
