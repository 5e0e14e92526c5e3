// SPDX-License-Identifier: Apache-2.0

package probe

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

func TestKernelGate(t *testing.T) {
	notSupported := fmt.Errorf("detect support for RingBuf: %w", ebpf.ErrNotSupported)
	tooOld := "is too old: nstrace needs Linux 5.8 or newer (the BPF ring buffer)"
	noBTF := "kernel BTF not found at " + BTFPath
	cases := []struct {
		release string
		btf     bool
		ringbuf error
		want    string // "" for no refusal
	}{
		// Debian 10: neither BTF nor the ring buffer; the version names why.
		{"4.19.0-27-cloud-amd64", false, nil, "kernel 4.19.0-27-cloud-amd64 " + tooOld},
		{"5.7.19", false, nil, "kernel 5.7.19 " + tooOld},
		// BTF, but the probe finds no ring buffer (5.4 with BTF, as Ubuntu 20.04).
		{"5.4.0-200-generic", true, notSupported, "kernel 5.4.0-200-generic " + tooOld},
		// The probe decides, not the number: a backported ring buffer passes,
		// a missing one refuses whatever the number says.
		{"4.18.0-553.el8_10.x86_64", true, nil, ""},
		{"6.1.0-57-cloud-amd64", true, notSupported, "kernel 6.1.0-57-cloud-amd64 " + tooOld},
		// New enough, no BTF: that is the one thing to fix.
		{"5.8.0", false, nil, noBTF},
		{"5.10.0-32-cloud-amd64", false, nil, noBTF},
		{"weird", false, nil, noBTF},
		{"5.10.0-32-cloud-amd64", true, nil, ""},
		{"6.18.44", true, nil, ""},
	}
	for _, c := range cases {
		err := kernelGate(c.release, c.btf, c.ringbuf)
		if c.want == "" {
			if err != nil {
				t.Errorf("%s btf=%v: refused: %v", c.release, c.btf, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s btf=%v: not refused, want %q", c.release, c.btf, c.want)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, c.want) || strings.Contains(msg, "\n") {
			t.Errorf("%s btf=%v: %q, want one line starting %q", c.release, c.btf, msg, c.want)
		}
	}
}

func TestParseRelease(t *testing.T) {
	for in, want := range map[string][2]int{
		"5.10.0-32-cloud-amd64": {5, 10}, "5.8-rc1": {5, 8}, "6.18.44-fc-v669": {6, 18}, "4.19": {4, 19},
	} {
		if got, ok := parseRelease(in); !ok || got != want {
			t.Errorf("parseRelease(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "5", "x.10", "v5.10"} {
		if got, ok := parseRelease(in); ok {
			t.Errorf("parseRelease(%q) = %v, want no version", in, got)
		}
	}
}
