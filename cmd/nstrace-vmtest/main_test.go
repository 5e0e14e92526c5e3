// SPDX-License-Identifier: Apache-2.0

package main

import (
	"strings"
	"testing"
)

// kernels.txt parses, and holds a guest with cgroup v1 alone; bad
// options are refused with their line.
func TestParseGuests(t *testing.T) {
	gs, err := parseGuests(kernelList)
	if err != nil {
		t.Fatal(err)
	}
	v1 := 0
	for _, g := range gs {
		if g.cgroup == "v1" {
			v1++
			if c := cmdline(g); !strings.Contains(c, "nstrace.cgroup=v1") || !strings.Contains(c, "nstrace.run="+g.run) {
				t.Errorf("%s: command line %q", g.line, c)
			}
		} else if g.cgroup != "v2" || g.run != "" {
			t.Errorf("%s: cgroup %q, run %q", g.line, g.cgroup, g.run)
		}
	}
	if v1 != 1 {
		t.Errorf("%d guests with cgroup v1 alone, want 1", v1)
	}
	for _, bad := range []string{"linux-image-x cgroup=v3", "linux-image-x run=", "linux-image-x color=red"} {
		if _, err := parseGuests("# comment\n" + bad); err == nil || !strings.Contains(err.Error(), "kernels.txt:2") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
