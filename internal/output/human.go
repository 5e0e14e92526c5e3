// SPDX-License-Identifier: Apache-2.0

package output

import (
	"io"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/ns"
	"golang.org/x/sys/unix"
)

// Human writes one aligned line per event, in the spirit of forkstat.
type Human struct {
	w          io.Writer
	buf        []byte
	host       ns.Set
	allNS      bool
	header     bool
	containers bool
}

// NewHuman returns a writer to w. Namespaces equal to host's are left out
// unless allNS is set.
func NewHuman(w io.Writer, host ns.Set, allNS bool) *Human {
	return &Human{w: w, buf: make([]byte, 0, 4096), host: host, allNS: allNS}
}

// Header is the column header line; HeaderContainers has the container
// column, shown once any event comes from a container.
const (
	Header           = "TIME            EVENT       PID   NSPID    PPID COMM             INFO"
	HeaderContainers = "TIME            EVENT       PID   NSPID    PPID CONTAINER    COMM             INFO"
)

// ShowContainers turns the container column on from the next line.
func (h *Human) ShowContainers() {
	if !h.containers {
		h.containers = true
		h.header = false
	}
}

func (h *Human) headerLine() string {
	if h.containers {
		return HeaderContainers
	}
	return Header
}

func pad(b []byte, s []byte, width int, right bool) []byte {
	n := width - len(s)
	if right {
		for ; n > 0; n-- {
			b = append(b, ' ')
		}
		return append(b, s...)
	}
	b = append(b, s...)
	for ; n > 0; n-- {
		b = append(b, ' ')
	}
	return b
}

// appendCell appends text escaped for the terminal, padded to width, and
// the space that ends the column.
func appendCell(b, text []byte, width int) []byte {
	start := len(b)
	b = appendHuman(b, text)
	for n := len(b) - start; n < width; n++ {
		b = append(b, ' ')
	}
	return append(b, ' ')
}

func padUint(b []byte, v uint32, width int) []byte {
	var tmp [12]byte
	return pad(b, strconv.AppendUint(tmp[:0], uint64(v), 10), width, true)
}

// Write writes e as one line, preceded by the header on the first call.
func (h *Human) Write(e *event.Event) error {
	b := h.buf[:0]
	if e.Container != nil && !h.containers {
		h.ShowContainers()
	}
	if !h.header {
		b = append(b, h.headerLine()...)
		b = append(b, '\n')
		h.header = true
	}
	b = appendLine(b, e, &h.host, h.allNS, h.containers)
	b = append(b, '\n')
	h.buf = b
	_, err := h.w.Write(b)
	return err
}

func appendLine(b []byte, e *event.Event, host *ns.Set, allNS, containers bool) []byte {
	b = e.Time.AppendFormat(b, "15:04:05.000000")
	b = append(b, ' ')
	if e.Kind == event.Lost {
		return appendLost(b, e)
	}
	b = pad(b, []byte(e.Kind.String()), 7, false)
	b = padUint(b, e.PID, 8)
	b = padUint(b, e.NSPID, 8)
	b = padUint(b, e.PPID, 8)
	b = append(b, ' ')
	if containers {
		name := "-"
		if e.Container != nil {
			name = e.Container.Short()
		}
		b = appendCell(b, []byte(name), 12)
	}
	b = appendCell(b, e.Comm, 16)

	switch e.Kind {
	case event.Exec:
		b = appendHuman(b, e.Filename)
		if e.FilenameTruncated {
			b = append(b, "…"...)
		}
		if len(e.Args) > 0 && filepath.Base(string(e.Args[0])) != filepath.Base(string(e.Filename)) {
			b = append(b, " (argv0 "...)
			b = appendHuman(b, e.Args[0])
			b = append(b, ')')
		}
		for i := 1; i < len(e.Args); i++ {
			b = append(b, ' ')
			b = appendHuman(b, e.Args[i])
		}
		if e.ArgsTruncated {
			b = append(b, "…"...)
		}
		if e.Ret < 0 {
			b = append(b, ' ')
			b = appendRet(b, e.Ret)
		}
	case event.Comm:
		b = append(b, "renamed "...)
		b = appendHuman(b, e.Comm)
		b = append(b, " → "...)
		b = appendHuman(b, e.CommNew)
	case event.UID:
		b = appendIDMove(b, "uid", e.OldUID, e.UID)
		b = appendIDMove(b, "euid", e.OldEUID, e.EUID)
		b = appendIDMove(b, "gid", e.OldGID, e.GID)
		b = appendIDMove(b, "egid", e.OldEGID, e.EGID)
		b = appendRet(b, e.Ret)
	case event.SID:
		b = append(b, "setsid "...)
		b = appendRet(b, e.Ret)
	case event.Ptrace:
		b = append(b, PtraceRequest(e.FlagsRaw)...)
		if e.FlagsRaw != ptraceTraceme {
			b = append(b, " pid "...)
			b = strconv.AppendUint(b, uint64(e.TargetPID), 10)
		}
		b = append(b, ' ')
		b = appendRet(b, e.Ret)
	case event.Fork, event.Clone:
		if e.Kind == event.Clone {
			b = appendFlagNames(b, e.FlagsRaw, true)
			b = append(b, ' ')
			if e.Ret < 0 {
				b = appendRet(b, e.Ret)
				break
			}
		}
		b = append(b, "child "...)
		b = strconv.AppendUint(b, uint64(e.ChildPID), 10)
		if e.ChildNSPID != e.ChildPID {
			b = append(b, " nspid "...)
			b = strconv.AppendUint(b, uint64(e.ChildNSPID), 10)
		}
		if nn := e.NewNS(); nn != 0 {
			b = append(b, " new"...)
			for t := ns.Type(0); t < ns.Count; t++ {
				if nn.Has(t) {
					b = appendNSValue(b, t, e.ChildNS[t])
				}
			}
		}
	case event.Exit:
		if e.Signal != 0 {
			b = append(b, "killed by "...)
			b = append(b, signalName(e.Signal)...)
			if e.CoreDumped {
				b = append(b, " (core dumped)"...)
			}
		} else {
			b = append(b, "exit "...)
			b = strconv.AppendInt(b, int64(e.ExitCode), 10)
		}
		b = append(b, " after "...)
		b = append(b, roundDuration(e.Duration).String()...)
	case event.Unshare:
		b = appendFlagNames(b, e.FlagsRaw, false)
		if e.Compat {
			b = append(b, " (32-bit)"...)
		}
		b = append(b, ' ')
		b = appendRet(b, e.Ret)
		b = appendMoves(b, e)
	case event.Setns:
		b = append(b, "fd="...)
		b = strconv.AppendInt(b, int64(e.FD), 10)
		b = append(b, " nstype="...)
		b = appendNSType(b, e.FlagsRaw, "|", plain)
		if e.Compat {
			b = append(b, " (32-bit)"...)
		}
		if e.TargetNS != 0 {
			b = append(b, " target="...)
			b = append(b, ns.CloneFlagName(e.TargetType)...)
			b = append(b, ":["...)
			b = strconv.AppendUint(b, e.TargetNS, 10)
			b = append(b, ']')
			if e.TargetOwner != "" {
				b = append(b, " ("...)
				b = appendHuman(b, []byte(e.TargetOwner))
				b = append(b, ')')
			}
		}
		if e.TargetPID != 0 {
			b = append(b, " target=pidfd:"...)
			b = strconv.AppendUint(b, uint64(e.TargetPID), 10)
		}
		b = append(b, ' ')
		b = appendRet(b, e.Ret)
		b = appendMoves(b, e)
	}

	b = appendAncestors(b, e.Ancestors)

	// The process's own namespaces: those not the host's, or all; a move
	// already shown above is not repeated.
	var moved ns.Mask
	if e.Kind == event.Setns || e.Kind == event.Unshare {
		moved = e.NewNS()
	}
	first := true
	for t := ns.Type(0); t < ns.Count; t++ {
		v := e.NS[t]
		if v == 0 || moved.Has(t) || (!allNS && v == host[t]) {
			continue
		}
		if first {
			b = append(b, ' ')
			first = false
		}
		b = appendNSValue(b, t, v)
	}
	return b
}

// lostTexts say why events were lost, for people.
var lostTexts = [event.LostReasons]string{
	event.LostRingBuffer: "the ring buffer was full (raise --buffer-size)",
	event.LostPending:    "too many unshare/setns calls in flight",
	event.LostCloneFlags: "too many namespace clones in flight (reported as fork)",
	event.LostTracked:    "the traced set was full",
}

// LostText says why events were lost, for people.
func LostText(r event.LostReason) string {
	if r < event.LostReasons {
		return lostTexts[r]
	}
	return r.String()
}

func appendLost(b []byte, e *event.Event) []byte {
	b = append(b, "LOST "...)
	if e.Reason == event.LostTracked {
		b = append(b, "pid "...)
		b = strconv.AppendUint(b, uint64(e.ChildPID), 10)
		b = append(b, ", child of "...)
		b = strconv.AppendUint(b, uint64(e.PID), 10)
		b = append(b, " ("...)
		b = appendHuman(b, e.Comm)
		b = append(b, "), and its descendants are not followed: "...)
		return append(b, LostText(e.Reason)...)
	}
	b = strconv.AppendUint(b, e.Count, 10)
	if e.Count == 1 {
		b = append(b, " event: "...)
	} else {
		b = append(b, " events: "...)
	}
	return append(b, LostText(e.Reason)...)
}

// appendIDMove shows an id, and its change: "uid 0→1000 ".
func appendIDMove(b []byte, name string, before, after uint32) []byte {
	b = append(b, name...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(before), 10)
	if after != before {
		b = append(b, "→"...)
		b = strconv.AppendUint(b, uint64(after), 10)
	}
	return append(b, ' ')
}

// appendAncestors shows the parents, nearest first, as host pid (and,
// where it differs, "/" and the pid in the parent's own pid namespace) and
// name; "|" marks where the pid namespace changes.
func appendAncestors(b []byte, as []event.Ancestor) []byte {
	if len(as) == 0 {
		return b
	}
	b = append(b, " ancestors="...)
	for i, a := range as {
		if i > 0 {
			if as[i-1].PidNS != a.PidNS {
				b = append(b, '|')
			} else {
				b = append(b, ',')
			}
		}
		b = strconv.AppendUint(b, uint64(a.PID), 10)
		if a.NSPID != a.PID {
			b = append(b, '/')
			b = strconv.AppendUint(b, uint64(a.NSPID), 10)
		}
		b = append(b, ':')
		b = appendHuman(b, a.Comm)
	}
	return b
}

// ptrace requests nstrace reports.
const (
	ptraceTraceme = 0
	ptraceAttach  = 16
	ptraceDetach  = 17
	ptraceSeize   = 0x4206
)

// PtraceRequest names a ptrace request.
func PtraceRequest(req uint64) string {
	switch req {
	case ptraceTraceme:
		return "PTRACE_TRACEME"
	case ptraceAttach:
		return "PTRACE_ATTACH"
	case ptraceDetach:
		return "PTRACE_DETACH"
	case ptraceSeize:
		return "PTRACE_SEIZE"
	}
	return "request " + strconv.FormatUint(req, 10)
}

func appendFlagNames(b []byte, raw uint64, clone bool) []byte {
	b = append(b, "flags="...)
	if raw == 0 {
		return append(b, '0')
	}
	return appendCloneFlags(b, raw, clone, "|", plain)
}

// cloneSignal is clone(2)'s CSIGNAL: the low byte names the signal the
// parent gets when the child ends.
const cloneSignal = 0xff

// appendCloneFlags names raw's bits; for clone, its low byte is the exit
// signal ("SIGCHLD").
func appendCloneFlags(b []byte, raw uint64, clone bool, sep string, name func([]byte, string) []byte) []byte {
	sig := raw & cloneSignal
	if !clone || sig == 0 {
		return ns.AppendCloneFlags(b, raw, sep, name)
	}
	if rest := raw &^ cloneSignal; rest != 0 {
		b = ns.AppendCloneFlags(b, rest, sep, name)
		b = append(b, sep...)
	}
	return name(b, signalName(int(sig)))
}

func plain(b []byte, s string) []byte { return append(b, s...) }

// appendNSType shows setns's nstype: "any" for 0 (the fd decides), the
// namespace types of its bits otherwise (several for a pidfd).
func appendNSType(b []byte, raw uint64, sep string, name func([]byte, string) []byte) []byte {
	if raw == 0 {
		return name(b, "any")
	}
	return ns.AppendCloneFlags(b, raw, sep, name)
}

func appendNSValue(b []byte, t ns.Type, v uint64) []byte {
	b = append(b, ' ')
	b = append(b, t.String()...)
	b = append(b, ":["...)
	b = strconv.AppendUint(b, v, 10)
	return append(b, ']')
}

// appendRet shows a syscall result: "= 0", "= -1 EPERM".
func appendRet(b []byte, ret int64) []byte {
	b = append(b, "= "...)
	b = strconv.AppendInt(b, ret, 10)
	if ret < 0 {
		b = append(b, ' ')
		b = append(b, Errno(ret)...)
	}
	return b
}

// appendMoves shows each namespace a call changed: net:[a]→[b].
func appendMoves(b []byte, e *event.Event) []byte {
	moved := e.NewNS()
	for t := ns.Type(0); t < ns.Count; t++ {
		if !moved.Has(t) {
			continue
		}
		b = append(b, ' ')
		b = append(b, t.String()...)
		b = append(b, ":["...)
		b = strconv.AppendUint(b, e.PrevNS[t], 10)
		b = append(b, "]→["...)
		b = strconv.AppendUint(b, e.NS[t], 10)
		b = append(b, ']')
	}
	return b
}

// Errno names a negative return value: -1 is "EPERM".
func Errno(ret int64) string {
	if ret >= 0 {
		return ""
	}
	if name := unix.ErrnoName(unix.Errno(-ret)); name != "" {
		return name
	}
	return "E" + strconv.FormatInt(-ret, 10)
}

func signalName(sig int) string {
	if n := unix.SignalName(unix.Signal(sig)); n != "" {
		return n
	}
	return "signal " + strconv.Itoa(sig)
}

func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Microsecond)
	}
	return d
}

// WriteHeader writes the column header now rather than before the first
// event, so that an idle feed shows what it will print.
func (h *Human) WriteHeader() error {
	if h.header {
		return nil
	}
	h.header = true
	_, err := io.WriteString(h.w, h.headerLine()+"\n")
	return err
}
