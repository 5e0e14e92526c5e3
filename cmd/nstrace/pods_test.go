// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/testutil"
)

// Kubernetes pods, run through containerd's CRI as a kubelet runs them
// (testutil.StartCRI): what nstrace says of their processes, against what
// CRI says of them and the kernel's /proc/PID/ns.
func TestPrivilegedPods(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.StartCRI(t)
	t.Run("attribution", func(t *testing.T) { testPodAttribution(t, c) })
	t.Run("scope", func(t *testing.T) { testPodScope(t, c) })
	t.Run("before-start", func(t *testing.T) { testPodBeforeStart(t, c) })
	t.Run("recreated", func(t *testing.T) { testPodRecreated(t, c) })
	t.Run("churn", func(t *testing.T) { testPodChurn(t, c) })
}

// podFacts is what CRI and the kernel say of a pod's sandbox or container.
type podFacts struct {
	id        string // the container's, or the sandbox's
	name      string // the container's name, "" for the sandbox
	pid       string // its init, on the host
	cgroup    string // its cgroup v2 path
	pod       testutil.PodMetadata
	ns        map[string]uint64 // its namespaces
	podSystem bool              // the sandbox
}

// sandboxFacts asks CRI and /proc about a pod's sandbox.
func sandboxFacts(t *testing.T, c *testutil.CRI, p *testutil.Pod) podFacts {
	t.Helper()
	s := c.InspectPod(t, p.ID)
	if s.Status.ID != p.ID || s.Status.Metadata != p.Config.Metadata {
		t.Fatalf("crictl inspectp %s: %+v, want %+v", p.ID, s.Status, p.Config.Metadata)
	}
	pid := strconv.Itoa(s.Info.PID)
	return podFacts{id: p.ID, pid: pid, cgroup: p.Config.Linux.CgroupParent + "/" + p.ID, pod: s.Status.Metadata, ns: nsInodes(t, pid), podSystem: true}
}

// containerFacts asks CRI and /proc about a container of pod p.
func containerFacts(t *testing.T, c *testutil.CRI, p *testutil.Pod, id string) podFacts {
	t.Helper()
	s := c.Inspect(t, id)
	if s.Status.ID != id || s.Info.SandboxID != p.ID {
		t.Fatalf("crictl inspect %s: %+v", id, s)
	}
	pid := strconv.Itoa(s.Info.PID)
	return podFacts{id: id, name: s.Status.Metadata.Name, pid: pid, cgroup: p.Config.Linux.CgroupParent + "/" + id, pod: p.Config.Metadata, ns: nsInodes(t, pid)}
}

// nsInodes reads a process's namespace inodes from /proc/PID/ns.
func nsInodes(t *testing.T, pid string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, typ := range []string{"ipc", "mnt", "net", "pid", "uts"} {
		var ino uint64
		l := nsLinks(t, pid, typ)[typ]
		if _, err := fmt.Sscanf(l, typ+":[%d]", &ino); err != nil {
			t.Fatalf("/proc/%s/ns/%s: %q", pid, typ, l)
		}
		out[typ] = ino
	}
	return out
}

// attributed checks an event's container against the facts: the id,
// runtime containerd, the pod's name, namespace and uid, and the
// container's name, or the sandbox mark.
func (f podFacts) attributed(l map[string]any) error {
	c := containerOf(l)
	if c == nil {
		return fmt.Errorf("no container (cgroup %v)", l["cgroup"])
	}
	p, _ := c["pod"].(map[string]any)
	if c["id"] != f.id || c["runtime"] != "containerd" || p == nil ||
		p["name"] != f.pod.Name || p["namespace"] != f.pod.Namespace || p["uid"] != f.pod.UID {
		return fmt.Errorf("container %v, want id %s of pod %+v (cgroup %v)", c, f.id, f.pod, l["cgroup"])
	}
	if f.podSystem {
		if p["sandbox"] != true || p["container"] != nil || c["image"] != nil {
			return fmt.Errorf("sandbox %v: want sandbox true, no container name nor image", c)
		}
		return nil
	}
	if p["container"] != f.name || p["sandbox"] != nil || c["image"] != testutil.ContainerdBusybox {
		return fmt.Errorf("container %v: want container %s, image %s", c, f.name, testutil.ContainerdBusybox)
	}
	return nil
}

// inCgroup matches the exec events of processes in cgroup path, as the
// kernel named it at the event.
func inCgroup(path string) func(map[string]any) bool {
	return func(l map[string]any) bool { return l["event"] == "exec" && l["cgroup"] == path }
}

// until reads f's lines until every match has matched one, and returns
// all the lines read.
func (f *feed) until(t *testing.T, matches ...func(map[string]any) bool) []map[string]any {
	t.Helper()
	left := append([]func(map[string]any) bool{}, matches...)
	var lines []map[string]any
	for len(left) > 0 {
		l := f.next(t, func(map[string]any) bool { return true })
		lines = append(lines, l)
		for i, m := range left {
			if m(l) {
				left = append(left[:i], left[i+1:]...)
				break
			}
		}
	}
	return lines
}

// humanFeed is nstrace's human view, read whole once it is stopped.
type humanFeed struct {
	cmd         *exec.Cmd
	out, stderr bytes.Buffer
	done        chan struct{}
}

func startHuman(t *testing.T, args ...string) *humanFeed {
	t.Helper()
	h := &humanFeed{done: make(chan struct{})}
	cmd, out := startRaw(t, &h.stderr, args...)
	h.cmd = cmd
	go func() { _, _ = io.Copy(&h.out, out); close(h.done) }()
	return h
}

// lines stops the feed and returns its lines, by column.
func (h *humanFeed) lines(t *testing.T) []map[string]string {
	t.Helper()
	time.Sleep(200 * time.Millisecond) // let it read what the kernel queued
	_ = h.cmd.Process.Signal(syscall.SIGINT)
	<-h.done
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("nstrace: %v: %s", err, h.stderr.String())
	}
	return humanLines(t, h.out.String())
}

// A pod of two containers: every exec in each carries the pod's name,
// namespace and uid, the container's name and id, runtime containerd;
// the sandbox (pause) is marked as the pod's sandbox; the containers'
// namespaces are the kernel's, net, ipc and uts the sandbox's; the
// human view names them POD/CONTAINER and POD/(sandbox); `nstrace ns`
// lists the pod's three in its shared network namespace.
func testPodAttribution(t *testing.T, c *testutil.CRI) {
	mark := strconv.Itoa(rand.IntN(1_000_000))
	appSleep, sideSleep := strconv.Itoa(1_000_000+rand.IntN(1_000_000)), strconv.Itoa(2_000_000+rand.IntN(1_000_000))
	f := startFeed(t, "--json", "-e", "exec")
	h := startHuman(t, "-e", "exec")

	p := c.RunPod(t, testutil.NewPod("web-"+mark, "nstrace-"+mark))
	appID := p.Start(t, testutil.NewContainer("app", "sh", "-c", "exec sleep "+appSleep))
	sideID := p.Start(t, testutil.NewContainer("sidecar", "sleep", sideSleep))
	c.ExecSync(t, appID, "/bin/true", "app-"+mark)
	c.ExecSync(t, sideID, "/bin/true", "sidecar-"+mark)

	sandbox := sandboxFacts(t, c, p)
	app, side := containerFacts(t, c, p, appID), containerFacts(t, c, p, sideID)
	lines := f.until(t, inCgroup(sandbox.cgroup), execOf("sh -c exec sleep "+appSleep), execOf("sleep "+appSleep),
		execOf("sleep "+sideSleep), execOf("/bin/true app-"+mark), execOf("/bin/true sidecar-"+mark))
	lines = stopFeed(t, f, lines)

	seen := map[string]int{}
	for _, l := range lines {
		var who podFacts
		switch l["cgroup"] {
		case sandbox.cgroup:
			who = sandbox
		case app.cgroup:
			who = app
		case side.cgroup:
			who = side
		default:
			continue
		}
		if l["event"] != "exec" || runcInit(l) && containerOf(l) == nil {
			continue // runc's own, before the container's state exists: unsure, so unnamed
		}
		if err := who.attributed(l); err != nil {
			t.Errorf("%q: %v", args(l), err)
		}
		if runcInit(l) {
			// runc's own, named once its state was read: in runc's
			// namespaces still, which it leaves after this exec.
			continue
		}
		ns := l["ns"].(map[string]any)
		for typ, ino := range who.ns {
			if uint64(ns[typ].(float64)) != ino {
				t.Errorf("%q: %s:[%v], /proc/%s/ns says %d", args(l), typ, ns[typ], who.pid, ino)
			}
		}
		seen[who.id+" "+args(l)]++
	}
	for _, want := range []string{sandbox.id + " /pause", app.id + " sh -c exec sleep " + appSleep, app.id + " sleep " + appSleep,
		app.id + " /bin/true app-" + mark, side.id + " sleep " + sideSleep, side.id + " /bin/true sidecar-" + mark} {
		if seen[want] != 1 {
			t.Errorf("exec %s seen %d times", want, seen[want])
		}
	}
	for _, typ := range []string{"net", "ipc", "uts"} {
		if app.ns[typ] != sandbox.ns[typ] || side.ns[typ] != sandbox.ns[typ] {
			t.Errorf("%s namespaces: app %d, sidecar %d, sandbox %d: not the pod's", typ, app.ns[typ], side.ns[typ], sandbox.ns[typ])
		}
	}
	if app.ns["pid"] == sandbox.ns["pid"] || side.ns["pid"] == app.ns["pid"] {
		t.Errorf("pid namespaces shared: app %d sidecar %d sandbox %d", app.ns["pid"], side.ns["pid"], sandbox.ns["pid"])
	}

	// The CONTAINER column, for the lines whose INFO starts so: every
	// pod's sandbox runs /pause, ours is one of them.
	named := map[string]map[string]bool{}
	pod := p.Config.Metadata.Name
	want := map[string]string{"/pause": pod + "/(sandbox)", "/bin/sh -c exec sleep " + appSleep: pod + "/app",
		"/bin/sleep " + sideSleep: pod + "/sidecar", "/bin/true app-" + mark: pod + "/app", "/bin/true sidecar-" + mark: pod + "/sidecar"}
	for _, l := range h.lines(t) {
		for info := range want {
			if l["EVENT"] == "exec" && (l["INFO"] == info || strings.HasPrefix(l["INFO"], info+" ")) {
				if named[info] == nil {
					named[info] = map[string]bool{}
				}
				named[info][l["CONTAINER"]] = true
			}
		}
	}
	for info, name := range want {
		if !named[info][name] || info != "/pause" && len(named[info]) != 1 {
			t.Errorf("human view: %q in %v, want %s", info, named[info], name)
		}
	}

	// The pod's shared network namespace, in `nstrace ns`: the pod's
	// three processes in it, its sandbox and both containers among its
	// containers, and named after its lowest pid's container (the
	// sandbox's, but where pids wrapped around between them).
	r := row(nsJSON(t), "net", sandbox.ns["net"])
	if r == nil {
		t.Fatalf("nstrace ns: no net namespace %d", sandbox.ns["net"])
	}
	held := map[any]bool{}
	hs, _ := r["containers"].([]any)
	for _, h := range hs {
		held[containerOf(map[string]any{"container": h})["id"]] = true
	}
	lowest, ok := map[string]podFacts{sandbox.pid: sandbox, app.pid: app, side.pid: side}[fmt.Sprint(r["pid"])]
	if r["nprocs"].(float64) < 3 || !held[sandbox.id] || !held[app.id] || !held[side.id] ||
		!ok || lowest.attributed(map[string]any{"container": containerOf(r)}) != nil {
		t.Errorf("nstrace ns: the pod's net namespace %d: %v", sandbox.ns["net"], r)
	}
}

// `--container NAMESPACE/POD` shows the pod's containers and nothing else,
// a container started in it later included; `--container POD/CONTAINER`
// one of them; a POD/CONTAINER two namespaces' pods answer to is an
// error naming both containers, and a POD an error naming both pods
// NAMESPACE/POD.
func testPodScope(t *testing.T, c *testutil.CRI) {
	mark := strconv.Itoa(rand.IntN(1_000_000))
	name := "web-" + mark
	a := c.RunPod(t, testutil.NewPod(name, "a-"+mark))
	b := c.RunPod(t, testutil.NewPod(name, "b-"+mark))
	aApp := a.Start(t, testutil.NewContainer("app", "sleep", "3600"))
	aSide := a.Start(t, testutil.NewContainer("sidecar", "sleep", "3600"))
	bApp := b.Start(t, testutil.NewContainer("app", "sleep", "3600"))

	pod := startFeed(t, "--json", "-e", "exec", "--container", "a-"+mark+"/"+name)
	one := startFeed(t, "--json", "-e", "exec", "--container", name+"/sidecar")
	var stderr bytes.Buffer
	if code := mainExit([]string{"-e", "exec", "--container", name + "/app"}, io.Discard, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "ambiguous") || !strings.Contains(stderr.String(), aApp) || !strings.Contains(stderr.String(), bApp) {
		t.Errorf("--container %s/app, two pods' containers: exit %d, %q", name, code, stderr.String())
	}
	stderr.Reset()
	if code := mainExit([]string{"-e", "exec", "--container", name}, io.Discard, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "ambiguous") || !strings.Contains(stderr.String(), "a-"+mark+"/"+name) || !strings.Contains(stderr.String(), "b-"+mark+"/"+name) {
		t.Errorf("--container %s, pods of two namespaces: exit %d, %q", name, code, stderr.String())
	}
	t.Logf("--container %s: %s", name, strings.TrimSpace(stderr.String()))

	late := a.Start(t, testutil.NewContainer("late", "sh", "-c", "exec sleep 3600", "late-"+mark))
	for _, id := range []string{aApp, aSide, bApp, late} {
		c.ExecSync(t, id, "/bin/true", "in-"+id[:12]+"-"+mark)
	}
	mustRun(t, "/bin/true", "host-"+mark)

	want := map[string]podFacts{}
	for _, id := range []string{aApp, aSide, late} {
		want[id] = containerFacts(t, c, a, id)
	}
	lines := pod.until(t, execOf("sh -c exec sleep 3600 late-"+mark), execOf("/bin/true in-"+aApp[:12]+"-"+mark),
		execOf("/bin/true in-"+aSide[:12]+"-"+mark), execOf("/bin/true in-"+late[:12]+"-"+mark))
	for _, l := range stopFeed(t, pod, lines) {
		id, _ := containerOf(l)["id"].(string)
		if f, ok := want[id]; !ok || f.attributed(l) != nil {
			t.Errorf("--container a-%s/%s shows %q of %v", mark, name, args(l), containerOf(l))
		}
	}
	lines = one.until(t, execOf("/bin/true in-"+aSide[:12]+"-"+mark))
	for _, l := range stopFeed(t, one, lines) {
		if err := want[aSide].attributed(l); err != nil {
			t.Errorf("--container %s/sidecar shows %q: %v", name, args(l), err)
		}
	}
}

// `--container NAMESPACE/POD` given before the pod exists shows it from
// its first exec, the sandbox's, and all its containers'.
func testPodBeforeStart(t *testing.T, c *testutil.CRI) {
	mark := strconv.Itoa(rand.IntN(1_000_000))
	cfg := testutil.NewPod("late-"+mark, "nstrace-"+mark)
	g := startFeed(t, "--json", "-e", "exec", "--container", cfg.Metadata.Namespace+"/"+cfg.Metadata.Name)
	p := c.RunPod(t, cfg)
	id := p.Start(t, testutil.NewContainer("app", "sleep", "3600"))
	c.ExecSync(t, id, "/bin/true", mark)

	sandbox, app := sandboxFacts(t, c, p), containerFacts(t, c, p, id)
	before := firstPayloadExec(t, g, "/pause")
	lines := g.until(t, execOf("sleep 3600"), execOf("/bin/true "+mark))
	for _, l := range stopFeed(t, g, append(before, lines...)) {
		who := app
		if l["cgroup"] == sandbox.cgroup {
			who = sandbox
		}
		if err := who.attributed(l); err != nil {
			t.Errorf("--container %s/%s before its start shows %q: %v", cfg.Metadata.Namespace, cfg.Metadata.Name, args(l), err)
		}
	}
}

// `--container NAMESPACE/POD` given while the pod runs, so that the
// kernel filters on its cgroup, follows the pod by that name: deleted and
// made again with a new uid (a StatefulSet's pod), in a new cgroup, its
// containers' execs are shown, and a pod of that name in another
// namespace's still are not.
func testPodRecreated(t *testing.T, c *testutil.CRI) {
	mark := strconv.Itoa(rand.IntN(1_000_000))
	first := testutil.NewPod("db-0", "nstrace-"+mark)
	ref := first.Metadata.Namespace + "/" + first.Metadata.Name
	p := c.RunPod(t, first)
	id := p.Start(t, testutil.NewContainer("app", "sleep", "3600"))
	other := c.RunPod(t, testutil.NewPod("db-0", "other-"+mark))
	otherID := other.Start(t, testutil.NewContainer("app", "sleep", "3600"))
	g := startFeed(t, "--json", "-e", "exec", "--container", ref)

	c.ExecSync(t, id, "/bin/true", "first-"+mark)
	want := map[string]podFacts{id: containerFacts(t, c, p, id)}
	lines := g.until(t, execOf("/bin/true first-"+mark))
	p.Remove(t)

	again := testutil.NewPod("db-0", first.Metadata.Namespace)
	q := c.RunPod(t, again)
	id = q.Start(t, testutil.NewContainer("app", "sleep", "3600"))
	c.ExecSync(t, otherID, "/bin/true", "other-"+mark)
	c.ExecSync(t, id, "/bin/true", "again-"+mark)
	want[id] = containerFacts(t, c, q, id)
	want[q.ID] = sandboxFacts(t, c, q)
	if again.Metadata.UID == first.Metadata.UID || again.Linux.CgroupParent == first.Linux.CgroupParent {
		t.Fatalf("the pod made again has uid %s and cgroup %s, as the first", again.Metadata.UID, again.Linux.CgroupParent)
	}
	lines = append(lines, g.until(t, execOf("sleep 3600"), execOf("/bin/true again-"+mark))...)
	if l := lines[len(lines)-1]; args(l) == "/bin/true again-"+mark {
		t.Logf("--container %s, the pod made again: %q in %v", ref, args(l), containerOf(l))
	}
	for _, l := range stopFeed(t, g, lines) {
		who, ok := want[fmt.Sprint(containerOf(l)["id"])]
		if !ok {
			t.Errorf("--container %s shows %q of %v", ref, args(l), containerOf(l))
			continue
		}
		if err := who.attributed(l); err != nil {
			t.Errorf("--container %s shows %q: %v", ref, args(l), err)
		}
	}
}

// Ten pods of one name, one after the other, each created and removed
// before the next: every sandbox and container is attributed to its own
// pod (its uid) and container, never to an earlier one.
func testPodChurn(t *testing.T, c *testutil.CRI) {
	const n = 10
	mark := strconv.Itoa(rand.IntN(1_000_000))
	f := startFeed(t, "--json", "-e", "exec")
	want := map[string]podFacts{} // by cgroup
	var matches []func(map[string]any) bool
	for i := range n {
		p := c.RunPod(t, testutil.NewPod("job-"+mark, "nstrace-"+mark))
		id := p.Start(t, testutil.NewContainer("run", "sh", "-c", "echo "+mark, strconv.Itoa(i)))
		sandbox := podFacts{id: p.ID, cgroup: p.Config.Linux.CgroupParent + "/" + p.ID, pod: p.Config.Metadata, podSystem: true}
		ctr := podFacts{id: id, name: "run", cgroup: p.Config.Linux.CgroupParent + "/" + id, pod: p.Config.Metadata}
		want[sandbox.cgroup], want[ctr.cgroup] = sandbox, ctr
		matches = append(matches, inCgroup(sandbox.cgroup), execOf("sh -c echo "+mark+" "+strconv.Itoa(i)))
		waitExited(t, c, id)
		p.Remove(t)
	}
	for _, l := range f.until(t, matches...) {
		who, ok := want[fmt.Sprint(l["cgroup"])]
		if !ok || l["event"] != "exec" || runcInit(l) && containerOf(l) == nil {
			continue
		}
		if err := who.attributed(l); err != nil {
			t.Errorf("%q: %v", args(l), err)
		}
	}
}

// waitExited waits for a container's process to end.
func waitExited(t *testing.T, c *testutil.CRI, id string) {
	t.Helper()
	if !testutil.Eventually(20*time.Second, 20*time.Millisecond, func() bool { return c.Inspect(t, id).Status.State == "CONTAINER_EXITED" }) {
		t.Fatalf("container %s still runs after 20s", id)
	}
}
