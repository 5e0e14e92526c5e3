// SPDX-License-Identifier: Apache-2.0

package probe

import (
	"testing"
	"time"
)

func TestRestFor(t *testing.T) {
	const most = 25 * time.Millisecond
	const room = 1 << 20 // a quarter of a 4 MiB ring buffer
	cases := []struct {
		name string
		n    uint64
		span time.Duration
		want time.Duration
	}{
		{"nothing read", 0, time.Second, most},
		{"no time passed", 4096, 0, most},
		// 3,000 execs a second of about 300 bytes: a quarter fills in
		// over a second.
		{"everyday rate", 300 * 30, 10 * time.Millisecond, most},
		// 400,000 events a second of 264 bytes fill a quarter in about
		// 10 ms.
		{"storm", 264 * 4000, 10 * time.Millisecond, 9930 * time.Microsecond},
		// A quarter in well under a millisecond: rest the least.
		{"flood", room * 4, time.Millisecond, minRest},
	}
	for _, c := range cases {
		got := restFor(most, c.n, c.span, room)
		if d := got - c.want; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("%s: restFor(%v, %d, %v, %d) = %v, want %v", c.name, most, c.n, c.span, room, got, c.want)
		}
	}
}
