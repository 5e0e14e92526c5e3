// SPDX-License-Identifier: Apache-2.0

package event

import (
	"slices"
	"strings"
	"testing"
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
	if _, err := ParseKinds("exec,lost"); err == nil || !strings.Contains(err.Error(), "valid: fork, exec, exit, clone, unshare, setns, all") {
		t.Errorf("lost is not a kind users select: %v", err)
	}
	if _, err := ParseKinds(","); err == nil {
		t.Error("empty list accepted")
	}
}

func TestNSTypeNames(t *testing.T) {
	want := []string{"cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "time_for_children", "user", "uts"}
	for i, n := range want {
		if NSType(i).String() != n {
			t.Errorf("%d: %s, want %s", i, NSType(i), n)
		}
		if typ, ok := ParseNSType(n); !ok || typ != NSType(i) {
			t.Errorf("ParseNSType(%s) = %d %v", n, typ, ok)
		}
	}
}

func TestNewNS(t *testing.T) {
	e := Event{Kind: Fork}
	e.NS[NSNet], e.ChildNS[NSNet] = 1, 2
	e.NS[NSUTS], e.ChildNS[NSUTS] = 3, 3
	if got := e.NewNS(); !slices.Equal(got, []NSType{NSNet}) {
		t.Errorf("fork: %v", got)
	}
	e = Event{Kind: Setns}
	e.PrevNS[NSMnt], e.NS[NSMnt] = 1, 5
	e.PrevNS[NSTime], e.NS[NSTime] = 1, 0 // unknown after: not a move
	if got := e.NewNS(); !slices.Equal(got, []NSType{NSMnt}) {
		t.Errorf("setns: %v", got)
	}
	if (&Event{Kind: Exec}).NewNS() != nil {
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
