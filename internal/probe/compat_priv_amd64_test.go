// SPDX-License-Identifier: Apache-2.0

package probe_test

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/probe"
	"github.com/nstrace/nstrace/internal/testutil"
)

// A 32-bit system call whose number is a 64-bit namespace call's is not
// that call, and a 32-bit unshare or setns is one (x86_64 with IA32
// emulation; int $0x80 from a 64-bit process).
func TestPrivilegedCompatCallsAreNotMistaken(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, hooks := range testutil.HookPaths(t) {
		t.Run(string(hooks), func(t *testing.T) {
			c := testutil.CollectWith(t, probe.Options{Kinds: event.Kinds(event.Unshare, event.Setns), Hooks: hooks})
			// ia32 272 is fadvise64_64 (the 64-bit unshare's number),
			// 310 unshare, 346 setns.
			cmd := helperCmd("compat", "272:12345", "310:0", "346:-1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helper: %v: %s", err, out)
			}
			t.Logf("32-bit calls (number, result): %q", out)
			pid := uint32(cmd.Process.Pid)
			c.Wait(t, 1, wait, func(e *event.Event) bool { return e.PID == pid && e.Kind == event.Unshare && !e.Compat && e.Ret == 0 })
			c.Settle()
			var got []*event.Event
			for _, e := range c.Events() {
				if e.PID == pid {
					got = append(got, e)
				}
			}
			type want struct {
				kind   event.Kind
				compat bool
				flags  uint64
				ret    int64
			}
			wants := []want{{event.Unshare, true, 0, 0}, {event.Setns, true, 0, -int64(unix.EBADF)}, {event.Unshare, false, 0, 0}}
			if hooks == probe.HooksFentry {
				// ksys_unshare serves both ABIs and cannot tell them
				// apart; only the 64-bit setns wrapper is hooked.
				wants = []want{{event.Unshare, false, 0, 0}, {event.Unshare, false, 0, 0}}
			}
			if len(got) != len(wants) {
				for _, e := range got {
					t.Logf("%v compat=%v flags=%#x fd=%d ret=%d", e.Kind, e.Compat, e.FlagsRaw, e.FD, e.Ret)
				}
				t.Fatalf("%d events, want %d", len(got), len(wants))
			}
			for i, w := range wants {
				e := got[i]
				if e.Kind != w.kind || e.Compat != w.compat || e.FlagsRaw != w.flags || e.Ret != w.ret {
					t.Errorf("event %d: %v compat=%v flags=%#x ret=%d, want %v compat=%v flags=%#x ret=%d",
						i, e.Kind, e.Compat, e.FlagsRaw, e.Ret, w.kind, w.compat, w.flags, w.ret)
				}
				if e.Kind == event.Setns && e.FD != -1 {
					t.Errorf("32-bit setns fd %d, want -1", e.FD)
				}
			}
		})
	}
}
