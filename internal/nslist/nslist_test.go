// SPDX-License-Identifier: Apache-2.0

package nslist

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
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
	for _, want := range []string{"4026532500  net   2       10   root  a     -    -    -          no", "4026531838  uts   1       10   root  a     -    -    -          yes", "unreadable namespaces: 1 (init)"} {
		if !strings.Contains(text, want) {
			t.Errorf("listing lacks %q:\n%s", want, text)
		}
	}
	out.Reset()
	if err := Run(root, host, Query{Inode: 4026532500, Type: ns.Net}, &out); err != nil || !strings.Contains(out.String(), `b\x1b[31m`) {
		t.Errorf("processes in net:[4026532500]: %s %v", out.String(), err)
	}
}

func TestTree(t *testing.T) {
	rows := []nsRow{
		{Inode: 1, Type: "user", NProcs: 3, PID: 1, User: "root", Comm: "init"},
		{Inode: 2, Type: "pid", NProcs: 3, PID: 1, User: "root", Comm: "init", Owner: 1},
		{Inode: 3, Type: "user", NProcs: 2, PID: 50, User: "alice", Comm: "podman", Parent: 1, Owner: 1},
		{Inode: 4, Type: "pid", NProcs: 1, PID: 51, User: "alice", Comm: "sh", Parent: 2, Owner: 3},
		{Inode: 5, Type: "net", NProcs: 1, PID: 51, User: "alice", Comm: "sh", Owner: 3},
	}
	var out bytes.Buffer
	if err := writeTree(&out, rows, Query{Tree: "owner"}); err != nil {
		t.Fatal(err)
	}
	want := `NS     TYPE  NPROCS  PID  USER   COMM    CONTAINER
1      user  3       1    root   init    -
├─3    user  2       50   alice  podman  -
│ ├─4  pid   1       51   alice  sh      -
│ └─5  net   1       51   alice  sh      -
└─2    pid   3       1    root   init    -
`
	if out.String() != want {
		t.Errorf("owner tree:\n%s\nwant:\n%s", out.String(), want)
	}
	out.Reset()
	if err := writeTree(&out, rows, Query{Tree: "parent", OnlyType: true, ListType: ns.Pid}); err != nil {
		t.Fatal(err)
	}
	want = `NS   TYPE  NPROCS  PID  USER   COMM  CONTAINER
2    pid   3       1    root   init  -
└─4  pid   1       51   alice  sh    -
`
	if out.String() != want {
		t.Errorf("parent tree of pid namespaces:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestNSListingNamesNoContainerOnHostNamespaces(t *testing.T) {
	// A container's process (Docker's cgroup naming) that shares the
	// host's uts namespace and is its lowest pid: the uts namespace is
	// still nobody's container, its own net namespace is the container's.
	root := t.TempDir()
	id := strings.Repeat("ab", 32)
	procfstest.Process(t, root, "5", "sleep", map[string]string{"net": "net:[4026532600]", "uts": "uts:[4026531838]"})
	if err := os.WriteFile(filepath.Join(root, "5", "cgroup"), []byte("0::/docker/"+id+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	procfstest.Process(t, root, "self", "nstrace", map[string]string{"uts": "uts:[4026531838]"})
	var host ns.Set
	host[ns.UTS] = 4026531838
	for _, q := range []Query{{JSON: true}, {PID: 5, JSON: true}} {
		var out bytes.Buffer
		if err := Run(root, host, q, &out); err != nil {
			t.Fatal(err)
		}
		rows := 0
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var r struct {
				Type      string `json:"type"`
				Container *struct {
					ID string `json:"id"`
				} `json:"container"`
			}
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			switch r.Type {
			case "uts":
				rows++
				if r.Container != nil {
					t.Errorf("%+v: the host's uts namespace is given container %s", q, r.Container.ID)
				}
			case "net":
				rows++
				if r.Container == nil || r.Container.ID != id {
					t.Errorf("%+v: the container's net namespace is given %+v", q, r.Container)
				}
			}
		}
		if rows != 2 {
			t.Errorf("%+v: %d uts and net rows:\n%s", q, rows, out.String())
		}
	}
}
