// SPDX-License-Identifier: Apache-2.0

package probe

import (
	"testing"

	"github.com/nstrace/nstrace/internal/event"
)

// The bitmap every system call is first tested against has a bit for
// exactly the numbers that have a class in either ABI's table.
func TestWatchedIsTheUnionOfBothTables(t *testing.T) {
	kinds, err := event.ParseKinds("clone,unshare,setns,uid,sid,ptrace")
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Kinds: kinds, Failed: true}
	for _, fentry := range []bool{false, true} {
		c64 := native.classes(opts, fentry)
		c32 := compat.classes(opts, fentry)
		w := watched(c64, c32)
		for nr := range c64 {
			got := w[nr/64]>>(nr%64)&1 == 1
			if want := c64[nr] != 0 || c32[nr] != 0; got != want {
				t.Errorf("fentry=%v: number %d watched=%v, classes %d and %d", fentry, nr, got, c64[nr], c32[nr])
			}
		}
		if !fentry && w[native.unshare/64]>>(native.unshare%64)&1 == 0 {
			t.Errorf("unshare (%d) not watched at the tracepoints", native.unshare)
		}
		if fentry && w[native.unshare/64]>>(native.unshare%64)&1 == 1 {
			t.Errorf("unshare (%d) watched at the tracepoints with fentry in use", native.unshare)
		}
	}
	if w := watched(sysTable{}); w != [len(w)]uint64{} {
		t.Errorf("empty tables watch %v", w)
	}
}
