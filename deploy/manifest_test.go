// SPDX-License-Identifier: Apache-2.0

package deploy

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/nstrace/nstrace/internal/probe"
)

// The DaemonSet grants the capabilities nstrace checks for, no more, and
// stays unprivileged in the host's pid namespace.
func TestDaemonSetCapabilities(t *testing.T) {
	b, err := os.ReadFile("kubernetes/nstrace.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	add := regexp.MustCompile(`(?s)add:\n(.*?)\n\s*# Kernels before 5.11`).FindStringSubmatch(text)
	if add == nil {
		t.Fatal("no capabilities.add list")
	}
	var got []string
	for _, m := range regexp.MustCompile(`(?m)^\s*- ([A-Z_]+)$`).FindAllStringSubmatch(add[1], -1) {
		got = append(got, "CAP_"+m[1])
	}
	var want []string
	for _, c := range append(append([]probe.Capability{}, probe.Required...), probe.Recommended...) {
		want = append(want, c.Name)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("DaemonSet adds %v, nstrace names %v", got, want)
	}
	for _, must := range []string{"hostPID: true", "privileged: false", `drop: ["ALL"]`, "readOnlyRootFilesystem: true", `"--json"`} {
		if !strings.Contains(text, must) {
			t.Errorf("DaemonSet lacks %q", must)
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*mountPath: (\S+)\n\s*readOnly: (\S+)`).FindAllStringSubmatch(text, -1) {
		if m[2] != "true" {
			t.Errorf("%s is mounted writable", m[1])
		}
	}
}
