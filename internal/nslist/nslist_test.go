// SPDX-License-Identifier: Apache-2.0

package nslist

import (
	"bytes"
	"strings"
	"testing"

	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/procfs/procfstest"
)

func TestNSListingFakeProc(t *testing.T) {
	// A fake /proc: two processes sharing a net namespace, one whose
	// links cannot be read. The listing must not stumble on the latter.
	root := t.TempDir()
	procfstest.Process(t, root, "1", "init", nil)
	procfstest.Process(t, root, "10", "a", map[string]string{"net": "net:[4026532500]", "uts": "uts:[4026531838]"})
	procfstest.Process(t, root, "11", "b\x1b[31m", map[string]string{"net": "net:[4026532500]"})
	procfstest.Process(t, root, "self", "nstrace", map[string]string{"uts": "uts:[4026531838]"})
	var host ns.Set
	host[ns.UTS] = 4026531838
	var out bytes.Buffer
	if err := Run(root, host, Query{}, &out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{"4026532500  net   2       10   a     -          no", "4026531838  uts   1       10   a     -          yes", "unreadable namespaces: 1 (init)"} {
		if !strings.Contains(text, want) {
			t.Errorf("listing lacks %q:\n%s", want, text)
		}
	}
	out.Reset()
	if err := Run(root, host, Query{Inode: 4026532500, Type: ns.Net}, &out); err != nil || !strings.Contains(out.String(), `b\x1b[31m`) {
		t.Errorf("processes in net:[4026532500]: %s %v", out.String(), err)
	}
}
