// SPDX-License-Identifier: Apache-2.0

package nslist

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nstrace/nstrace/internal/container"
	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/procfs/procfstest"
	"github.com/nstrace/nstrace/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const (
	pauseID = "d0bba3cdd9ae446dd50c4caaf3dac637345ab8534e5f11c9d63fc5e11f526e25"
	appID   = "f82eb3f454cdb7e9be3e0f8c0ea99ddfdde036042d381d4a92e4505c19f5e38b"
	loneID  = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	evilID  = "eeee0000eeee0000eeee0000eeee0000eeee0000eeee0000eeee0000eeee0000"
	infraID = "9f5ab2abd31c5436fe482402d43f75ff1769c4de03a981a96bb549a361d54010"
	webID   = "d7106c2dde54e1f2fbbfcbda97c38f39af081dd0acb3ffc6aa798fd1031830c0"
	podUID  = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
)

// sharedHost is a fake /proc and runtimes' state: Docker's pause and app
// sharing net and ipc (with a host shell nsenter'd into that net
// namespace), a Docker container known by id only, one whose name is
// hostile, and a CRI-O pod default/web whose infra and web containers
// share net, ipc and uts (with another host shell in that net
// namespace).
func sharedHost(t *testing.T) (string, ns.Set, container.Roots) {
	root := t.TempDir()
	state := t.TempDir()
	roots := container.Roots{Docker: filepath.Join(state, "docker"), CRIO: filepath.Join(state, "crio")}
	var host ns.Set
	host[ns.Cgroup], host[ns.IPC], host[ns.Mnt], host[ns.Net], host[ns.Pid], host[ns.UTS] =
		4026531835, 4026531839, 4026531841, 4026531840, 4026531836, 4026531838
	links := func(over map[string]uint64) map[string]string {
		m := map[string]string{}
		for _, t := range []ns.Type{ns.Cgroup, ns.IPC, ns.Mnt, ns.Net, ns.Pid, ns.UTS} {
			ino := host[t]
			if v, ok := over[t.String()]; ok {
				ino = v
			}
			m[t.String()] = t.String() + ":[" + strconv.FormatUint(ino, 10) + "]"
		}
		return m
	}
	proc := func(pid, comm, cgroup string, over map[string]uint64) {
		procfstest.Process(t, root, pid, comm, links(over))
		write(t, filepath.Join(root, pid, "cgroup"), "0::"+cgroup+"\n")
	}
	docker := func(id, name string) {
		b, _ := json.Marshal(map[string]any{"Name": "/" + name, "Config": map[string]any{"Image": "busybox"}})
		write(t, filepath.Join(roots.Docker, id, "config.v2.json"), string(b))
	}
	crio := func(id, name string) {
		b, _ := json.Marshal(map[string]any{"annotations": map[string]string{
			"io.kubernetes.pod.name": "web", "io.kubernetes.pod.namespace": "default",
			"io.kubernetes.pod.uid": podUID, "io.kubernetes.container.name": name,
			"io.kubernetes.cri-o.ImageName": "registry.k8s.io/" + strings.ToLower(name),
		}})
		write(t, filepath.Join(roots.CRIO, id, "userdata", "config.json"), string(b))
	}
	procfstest.Process(t, root, "1", "init", nil)
	proc("10", "sh", "/", nil)
	docker(pauseID, "pause")
	docker(appID, "app")
	docker(evilID, "evil\"\\N\x1b[31m\u202e")
	proc("100", "sleep", "/docker/"+pauseID, map[string]uint64{"ipc": 4026532179, "mnt": 4026532177, "net": 4026532181, "pid": 4026532180, "uts": 4026532178})
	proc("200", "sleep", "/docker/"+appID, map[string]uint64{"ipc": 4026532179, "mnt": 4026532246, "net": 4026532181, "pid": 4026532248, "uts": 4026532247})
	proc("201", "top", "/docker/"+appID, map[string]uint64{"ipc": 4026532179, "mnt": 4026532246, "net": 4026532181, "pid": 4026532248, "uts": 4026532247})
	proc("300", "sh", "/", map[string]uint64{"net": 4026532181})
	proc("500", "sleep", "/docker/"+loneID, map[string]uint64{"net": 4026532500})
	proc("600", "sleep", "/docker/"+evilID, map[string]uint64{"net": 4026532600})
	pod := "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + strings.ReplaceAll(podUID, "-", "_") + ".slice/"
	crio(infraID, "POD")
	crio(webID, "nginx")
	proc("400", "pause", pod+"crio-"+infraID+".scope", map[string]uint64{"ipc": 4026532319, "mnt": 4026532317, "net": 4026532249, "pid": 4026532320, "uts": 4026532318})
	proc("410", "nginx", pod+"crio-"+webID+".scope", map[string]uint64{"ipc": 4026532319, "mnt": 4026532321, "net": 4026532249, "pid": 4026532322, "uts": 4026532318})
	proc("310", "sh", "/", map[string]uint64{"net": 4026532249})
	return root, host, roots
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		write(t, path, string(got))
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// The listing, its JSON and tree, the members listing and the picture of
// the fake host, each against its golden file.
func TestSharedGolden(t *testing.T) {
	root, host, roots := sharedHost(t)
	for _, c := range []struct {
		file string
		q    Query
	}{
		{"shared.txt", Query{}},
		{"shared.json", Query{JSON: true}},
		{"shared-tree.txt", Query{Tree: "owner"}},
		{"members.txt", Query{Members: true}},
		{"members.json", Query{Members: true, JSON: true}},
		{"members-net.txt", Query{Members: true, OnlyType: true, ListType: ns.Net}},
		{"shared.dot", Query{Dot: true}},
	} {
		var out bytes.Buffer
		if err := run(root, host, roots, c.q, &out); err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		golden(t, c.file, out.Bytes())
		if strings.HasSuffix(c.file, ".json") {
			for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				if !json.Valid([]byte(line)) {
					t.Errorf("%s: not JSON: %s", c.file, line)
				}
			}
		}
	}
}

// Graphviz takes the fake host's picture, hostile names and all.
func TestPrivilegedDotRenders(t *testing.T) {
	testutil.RequirePrivileged(t)
	testutil.NeedTools(t, "dot")
	root, host, roots := sharedHost(t)
	var out bytes.Buffer
	if err := run(root, host, roots, Query{Dot: true}, &out); err != nil {
		t.Fatal(err)
	}
	svg := renderSVG(t, out.Bytes())
	for _, want := range []string{"pod default/web", "net:[4026532181]", "shared by 2", `evil&quot;\\N\x1b[31m\u{202e}`} {
		if !strings.Contains(svg, want) {
			t.Errorf("the SVG lacks %q", want)
		}
	}
}

// renderSVG runs dot -Tsvg on a graph, failing t on any complaint.
func renderSVG(t *testing.T, graph []byte) string {
	t.Helper()
	cmd := exec.Command("dot", "-Tsvg")
	cmd.Stdin = bytes.NewReader(graph)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("dot -Tsvg: %v: %s\n%s", err, stderr.String(), graph)
	}
	return stdout.String()
}

func TestHoldersCell(t *testing.T) {
	named := func(names ...string) []holder {
		var hs []holder
		for _, n := range names {
			hs = append(hs, holder{c: &event.Container{ID: n + strings.Repeat("0", 40), Name: n}, pids: []uint32{1}})
		}
		return hs
	}
	web := func(uid, name string, containers ...string) []holder {
		var hs []holder
		for _, c := range containers {
			hs = append(hs, holder{c: &event.Container{ID: c, Pod: &event.Pod{UID: uid, Name: name, Namespace: "default", Container: c}}, pids: []uint32{1, 2}})
		}
		return hs
	}
	for _, c := range []struct {
		hs []holder
		// others are the processes of no known container.
		others int
		want   string
	}{
		{nil, 0, "-"},
		{named("pause"), 0, "pause"},
		{named("pause", "app"), 0, "pause,app"},
		{named("a", "b", "c"), 0, "a,b,c"},
		{named("web-1", "web-2", "web-3", "web-4", "web-5"), 0, "web-1,web-2,+3"},
		{[]holder{{c: &event.Container{ID: loneID}}}, 0, "0123456789ab"},
		// One pod: named once; one container of it: pod/container.
		{web(podUID, "web", "infra", "nginx"), 0, "pod default/web"},
		{web(podUID, "web", "nginx"), 0, "web/nginx"},
		// Two pods of one name (a pod made again) are not one pod.
		{append(web(podUID, "web", "nginx"), web("ffffffff-4e5f-6789-abcd-ef0123456789", "web", "nginx")...), 0, "web/nginx,web/nginx"},
		// A pod's container beside a container of no pod.
		{append(web(podUID, "web", "nginx"), named("debug")...), 0, "web/nginx,debug"},
		{[]holder{{c: &event.Container{ID: "x\x1b[2J"}}}, 0, `x\x1b[2J`},
		// Processes of no known container (a host shell nsenter'd in)
		// are counted, one each, after the pod or the containers,
		// with the containers a full cell leaves out.
		{web(podUID, "web", "infra", "nginx"), 1, "pod default/web,+1"},
		{web(podUID, "web", "nginx"), 2, "web/nginx,+2"},
		{named("pause", "app"), 1, "pause,app,+1"},
		{named("a", "b", "c"), 1, "a,b,c,+1"},
		{named("web-1", "web-2", "web-3", "web-4", "web-5"), 2, "web-1,web-2,+5"},
	} {
		if got := holdersCell(c.hs, heldPIDs(c.hs)+c.others); got != c.want {
			t.Errorf("%d holders, %d other processes: %q, want %q", len(c.hs), c.others, got, c.want)
		}
	}
}

func TestCompactPIDs(t *testing.T) {
	for _, c := range []struct {
		pids []uint32
		want string
	}{
		{nil, "-"},
		{[]uint32{7}, "7"},
		{[]uint32{1, 2, 3, 7, 9, 10}, "1-3,7,9-10"},
		{[]uint32{4294967294, 4294967295}, "4294967294-4294967295"},
	} {
		if got := compactPIDs(c.pids); got != c.want {
			t.Errorf("%v: %q, want %q", c.pids, got, c.want)
		}
	}
}

func TestDotLabel(t *testing.T) {
	for _, c := range []struct {
		lines []string
		want  string
	}{
		{[]string{"net:[4026532181]", "shared by 2"}, `"net:[4026532181]\nshared by 2"`},
		{[]string{`a"b`}, `"a\"b"`},
		{[]string{`back\slash`, `\N`}, `"back\\\\slash\n\\\\N"`},
		{[]string{"line\nbreak\x00"}, `"line\\nbreak\\x00"`},
		{[]string{"bad\xff", ""}, `"bad\\xff"`},
		{[]string{"\u202eevil"}, `"\\u{202e}evil"`},
	} {
		if got := dotLabel(c.lines...); got != c.want {
			t.Errorf("%q: %s, want %s", c.lines, got, c.want)
		}
	}
}
