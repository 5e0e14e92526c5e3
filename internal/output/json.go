// SPDX-License-Identifier: Apache-2.0

package output

import (
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/ns"
)

// JSON writes one JSON object per event and line. Keys are snake_case and
// documented in docs/json.md; users' jq scripts depend on them.
type JSON struct {
	w   io.Writer
	buf []byte
}

// NewJSON returns a writer to w. It does not buffer beyond one line: give
// it a buffered writer.
func NewJSON(w io.Writer) *JSON { return &JSON{w: w, buf: make([]byte, 0, 4096)} }

// Write writes e as one line.
func (j *JSON) Write(e *event.Event) error {
	b := AppendJSON(j.buf[:0], e)
	b = append(b, '\n')
	j.buf = b
	_, err := j.w.Write(b)
	return err
}

func key(b []byte, k string) []byte {
	b = append(b, ',', '"')
	b = append(b, k...)
	return append(b, '"', ':')
}

func keyUint(b []byte, k string, v uint64) []byte {
	return strconv.AppendUint(key(b, k), v, 10)
}

func keyInt(b []byte, k string, v int64) []byte {
	return strconv.AppendInt(key(b, k), v, 10)
}

func keyBool(b []byte, k string, v bool) []byte {
	return strconv.AppendBool(key(b, k), v)
}

// keyBytes writes a string field, and beside it k_b64 with the raw bytes
// when they are not valid UTF-8, so nothing the kernel saw is lost.
func keyBytes(b []byte, k string, v []byte) []byte {
	b = appendJSONString(key(b, k), v)
	if !utf8.Valid(v) {
		b = appendBase64(key(b, k+"_b64"), v)
	}
	return b
}

func keyStr(b []byte, k, v string) []byte {
	b = key(b, k)
	b = append(b, '"')
	b = append(b, v...) // callers pass names that need no escaping
	return append(b, '"')
}

func appendNS(b []byte, k string, set *ns.Set) []byte {
	b = key(b, k)
	b = append(b, '{')
	first := true
	for t := ns.Type(0); t < ns.Count; t++ {
		if set[t] == 0 {
			continue // unknown: left out rather than a false 0
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, t.String()...)
		b = append(b, '"', ':')
		b = strconv.AppendUint(b, set[t], 10)
	}
	return append(b, '}')
}

func quoted(b []byte, s string) []byte {
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendTypes writes a list of namespace type names.
func appendTypes(b []byte, k string, m ns.Mask) []byte {
	b = key(b, k)
	b = append(b, '[')
	first := true
	for t := ns.Type(0); t < ns.Count; t++ {
		if !m.Has(t) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = quoted(b, t.String())
	}
	return append(b, ']')
}

// appendContainer writes the container object, the one JSON form of a
// container in the feed and in `nstrace ns`.
func appendContainer(b []byte, c *event.Container) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, []byte(c.ID))
	b = keyStrOmit(b, "name", c.Name)
	b = keyStrOmit(b, "runtime", c.Runtime)
	b = keyStrOmit(b, "image", c.Image)
	if p := c.Pod; p != nil {
		b = append(b, `,"pod":{`...)
		start := len(b)
		b = keyStrOmit(b, "name", p.Name)
		b = keyStrOmit(b, "namespace", p.Namespace)
		b = keyStrOmit(b, "uid", p.UID)
		b = keyStrOmit(b, "container", p.Container)
		if p.Sandbox {
			b = append(b, `,"sandbox":true`...)
		}
		if len(b) > start {
			b = append(b[:start], b[start+1:]...) // the first key's comma
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// keyStrOmit writes a string field unless it is empty.
func keyStrOmit(b []byte, k, v string) []byte {
	if v == "" {
		return b
	}
	b = key(b, k)
	return appendJSONString(b, []byte(v))
}

// AppendJSON appends the JSON object for e, without a newline.
func AppendJSON(b []byte, e *event.Event) []byte {
	b = append(b, `{"event":"`...)
	b = append(b, e.Kind.String()...)
	b = append(b, `","time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if e.Kind == event.Lost {
		b = keyUint(b, "count", e.Count)
		b = keyStr(b, "reason", e.Reason.String())
		if e.Reason == event.LostTracked {
			b = keyUint(b, "child_pid", uint64(e.ChildPID))
			b = keyUint(b, "pid", uint64(e.PID))
			b = keyBytes(b, "comm", e.Comm)
		}
		return append(b, '}')
	}
	b = keyUint(b, "pid", uint64(e.PID))
	b = keyUint(b, "tid", uint64(e.TID))
	b = keyUint(b, "ppid", uint64(e.PPID))
	b = keyUint(b, "nspid", uint64(e.NSPID))
	b = keyUint(b, "uid", uint64(e.UID))
	b = keyUint(b, "gid", uint64(e.GID))
	b = keyUint(b, "euid", uint64(e.EUID))
	b = keyUint(b, "egid", uint64(e.EGID))
	b = keyBytes(b, "comm", e.Comm)
	b = appendNS(b, "ns", &e.NS)
	b = key(b, "cgroup")
	b = appendJSONString(b, []byte(e.Cgroup))
	b = keyUint(b, "cgroup_id", e.CgroupID)
	b = keyStrOmit(b, "cgroup_v1", e.CgroupV1)
	if e.Container != nil {
		b = appendContainer(key(b, "container"), e.Container)
	}

	switch e.Kind {
	case event.Exec:
		b = keyBytes(b, "filename", e.Filename)
		if e.FilenameTruncated {
			b = keyBool(b, "filename_truncated", true)
		}
		b = key(b, "args")
		b = append(b, '[')
		valid := true
		for i, a := range e.Args {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, a)
			valid = valid && utf8.Valid(a)
		}
		b = append(b, ']')
		if !valid {
			b = key(b, "args_b64")
			b = append(b, '[')
			for i, a := range e.Args {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendBase64(b, a)
			}
			b = append(b, ']')
		}
		b = keyBool(b, "args_truncated", e.ArgsTruncated)
		if e.Ret < 0 {
			b = keyInt(b, "ret", e.Ret)
			b = keyStr(b, "errno", Errno(e.Ret))
		}
	case event.Fork, event.Clone:
		b = keyUint(b, "child_pid", uint64(e.ChildPID))
		b = keyUint(b, "child_nspid", uint64(e.ChildNSPID))
		b = appendNS(b, "child_ns", &e.ChildNS)
		b = appendTypes(b, "new_ns", e.NewNS())
		if e.Kind == event.Clone {
			b = appendFlags(b, e.FlagsRaw, true)
			b = keyInt(b, "ret", e.Ret)
		}
	case event.Exit:
		b = keyInt(b, "exit_code", int64(e.ExitCode))
		b = keyInt(b, "signal", int64(e.Signal))
		b = keyBool(b, "core_dumped", e.CoreDumped)
		b = keyInt(b, "duration_ns", int64(e.Duration))
	case event.Comm:
		b = keyBytes(b, "comm_new", e.CommNew)
	case event.UID:
		b = keyUint(b, "old_uid", uint64(e.OldUID))
		b = keyUint(b, "old_euid", uint64(e.OldEUID))
		b = keyUint(b, "old_gid", uint64(e.OldGID))
		b = keyUint(b, "old_egid", uint64(e.OldEGID))
		b = appendRetOnly(b, e.Ret)
	case event.SID:
		if e.Ret > 0 {
			b = keyInt(b, "sid", e.Ret)
		}
		b = appendRetOnly(b, e.Ret)
	case event.Ptrace:
		b = keyStr(b, "request", PtraceRequest(e.FlagsRaw))
		b = keyUint(b, "request_raw", e.FlagsRaw)
		if e.FlagsRaw != ptraceTraceme {
			b = keyUint(b, "target_pid", uint64(e.TargetPID))
		}
		b = appendRetOnly(b, e.Ret)
	case event.Unshare:
		b = appendFlags(b, e.FlagsRaw, false)
		b = appendResult(b, e)
		if e.Compat {
			b = keyBool(b, "compat", true)
		}
	case event.Setns:
		b = keyInt(b, "fd", int64(e.FD))
		b = key(b, "nstype")
		b = append(b, '[')
		b = appendNSType(b, e.FlagsRaw, ",", quoted)
		b = append(b, ']')
		b = keyUint(b, "nstype_raw", e.FlagsRaw)
		if e.TargetNS != 0 {
			b = keyUint(b, "target_ns", e.TargetNS)
			b = keyStr(b, "target_type", ns.CloneFlagName(e.TargetType))
			if e.TargetOwner != "" {
				b = key(b, "target_owner")
				b = appendJSONString(b, []byte(e.TargetOwner))
			}
		}
		if e.TargetPID != 0 {
			b = keyUint(b, "target_pid", uint64(e.TargetPID))
		}
		b = appendResult(b, e)
		if e.Compat {
			b = keyBool(b, "compat", true)
		}
	}
	if len(e.Ancestors) > 0 {
		b = appendAncestorsJSON(b, e.Ancestors)
	}
	return append(b, '}')
}

func appendFlags(b []byte, raw uint64, clone bool) []byte {
	b = key(b, "flags")
	b = append(b, '[')
	b = appendCloneFlags(b, raw, clone, ",", quoted)
	b = append(b, ']')
	return keyUint(b, "flags_raw", raw)
}

// appendRetOnly writes a system call's result and its errno's name.
func appendRetOnly(b []byte, ret int64) []byte {
	b = keyInt(b, "ret", ret)
	if ret < 0 {
		b = keyStr(b, "errno", Errno(ret))
	}
	return b
}

// appendAncestorsJSON writes the parents, nearest first.
func appendAncestorsJSON(b []byte, as []event.Ancestor) []byte {
	b = key(b, "ancestors")
	b = append(b, '[')
	for i, a := range as {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"pid":`...)
		b = strconv.AppendUint(b, uint64(a.PID), 10)
		b = keyUint(b, "nspid", uint64(a.NSPID))
		b = keyUint(b, "pid_ns", a.PidNS)
		b = keyBytes(b, "comm", a.Comm)
		b = append(b, '}')
	}
	return append(b, ']')
}

func appendResult(b []byte, e *event.Event) []byte {
	b = keyInt(b, "ret", e.Ret)
	if e.Ret < 0 {
		b = keyStr(b, "errno", Errno(e.Ret))
	}
	b = appendNS(b, "prev_ns", &e.PrevNS)
	return appendTypes(b, "new_ns", e.NewNS())
}

// ContainerJSON is a container in the JSON form the feed writes, for other
// JSON documents (nstrace ns) to embed.
type ContainerJSON struct{ event.Container }

// ContainerForJSON wraps c, or returns nil.
func ContainerForJSON(c *event.Container) *ContainerJSON {
	if c == nil {
		return nil
	}
	return &ContainerJSON{*c}
}

// MarshalJSON writes the feed's container object.
func (c *ContainerJSON) MarshalJSON() ([]byte, error) { return appendContainer(nil, &c.Container), nil }
