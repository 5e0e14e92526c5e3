// SPDX-License-Identifier: Apache-2.0

package event

import (
	"slices"
	"strings"
	"testing"

	"github.com/nstrace/nstrace/internal/ns"
)

func TestParseKinds(t *testing.T) {
	s, err := ParseKinds("exec, FORK")
	if err != nil || !s.Has(Exec) || !s.Has(Fork) || s.Has(Exit) {
		t.Errorf("exec,fork: %b %v", s, err)
	}
	if s, _ := ParseKinds("all"); s != AllKinds() {
		t.Errorf("all = %b", s)
	}
	for _, k := range Traced {
		if s, err := ParseKinds(k.String()); err != nil || !s.Has(k) {
			t.Errorf("%s: %v", k, err)
		}
	}
	if _, err := ParseKinds("exec,lost"); err == nil || !strings.Contains(err.Error(), "valid: fork, exec, exit, clone, unshare, setns, comm, uid, sid, ptrace, core, nonzeroexit, all") {
		t.Errorf("lost is not a kind users select: %v", err)
	}
	if _, err := ParseKinds(","); err == nil {
		t.Error("empty list accepted")
	}
}

func TestNewNS(t *testing.T) {
	e := Event{Kind: Fork}
	e.NS[ns.Net], e.ChildNS[ns.Net] = 1, 2
	e.NS[ns.UTS], e.ChildNS[ns.UTS] = 3, 3
	if got := e.NewNS().Types(); !slices.Equal(got, []ns.Type{ns.Net}) {
		t.Errorf("fork: %v", got)
	}
	e = Event{Kind: Setns}
	e.PrevNS[ns.Mnt], e.NS[ns.Mnt] = 1, 5
	e.PrevNS[ns.Time], e.NS[ns.Time] = 1, 0 // unknown after: not a move
	if got := e.NewNS().Types(); !slices.Equal(got, []ns.Type{ns.Mnt}) {
		t.Errorf("setns: %v", got)
	}
	if (&Event{Kind: Exec}).NewNS() != 0 {
		t.Error("exec never moves namespaces")
	}
}

func TestClone(t *testing.T) {
	buf := []byte("shared")
	e := Event{Comm: buf[:2], Args: [][]byte{buf}}
	c := e.Clone()
	buf[0] = 'X'
	if string(c.Comm) != "sh" || string(c.Args[0]) != "shared" {
		t.Errorf("clone shares memory: %q %q", c.Comm, c.Args[0])
	}
}
