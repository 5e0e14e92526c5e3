// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/testutil"
)

// engine drives one container runtime as its users do.
type engine struct {
	runtime string // what nstrace calls it
	setup   func(t *testing.T) string
	// run starts a detached container called name running args in image,
	// and returns the runtime's own id for it.
	run func(t *testing.T, image, name string, extra []string, args ...string) string
	// exec runs args in the running container name, to the end.
	exec func(t *testing.T, name string, args ...string)
	// remove removes the container, whatever its state.
	remove func(name string)
	// cgroupV1, if set, is the controller whose cgroup v1 hierarchy must
	// be what names the container's events.
	cgroupV1 string
}

// cli runs a runtime's command, failing t with a hint if its daemon is
// gone.
func cli(t *testing.T, daemon, name string, args ...string) string {
	t.Helper()
	out, err := testutil.RunErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v%s", name, strings.Join(args, " "), err, testutil.DaemonGone(daemon))
	}
	return out
}

var ctrArgs = []string{"--address", testutil.ContainerdSocket, "--namespace", "default"}

var engines = []engine{
	{
		runtime: "runc",
		setup:   func(t *testing.T) string { testutil.NeedTools(t, "runc"); return "" },
		run: func(t *testing.T, _, name string, _ []string, args ...string) string {
			runc(t, runcBundle(t, args...), "run", "-d", name)
			return name
		},
		exec: func(t *testing.T, name string, args ...string) {
			runc(t, "", append([]string{"exec", name}, args...)...)
		},
		remove: func(name string) {
			_ = exec.Command("runc", "kill", name, "KILL").Run()
			_ = exec.Command("runc", "delete", "-f", name).Run()
		},
	},
	{
		runtime: "containerd",
		setup: func(t *testing.T) string {
			testutil.Containerd(t)
			return testutil.ImportBusybox(t, "containerd")
		},
		run: func(t *testing.T, image, name string, extra []string, args ...string) string {
			a := append(append(append([]string{}, ctrArgs...), "run", "-d"), extra...)
			cli(t, "containerd", "ctr", append(append(a, image, name), args...)...)
			return name
		},
		exec: func(t *testing.T, name string, args ...string) {
			id := fmt.Sprintf("exec%d", rand.IntN(1_000_000))
			cli(t, "containerd", "ctr", append(append(append([]string{}, ctrArgs...), "task", "exec", "--exec-id", id, name), args...)...)
		},
		remove: func(name string) {
			_, _ = testutil.RunErr("ctr", append(append([]string{}, ctrArgs...), "task", "rm", "-f", name)...)
			_, _ = testutil.RunErr("ctr", append(append([]string{}, ctrArgs...), "container", "rm", name)...)
		},
	},
	{
		runtime: "docker",
		setup: func(t *testing.T) string {
			testutil.Docker(t)
			return testutil.ImportBusybox(t, "docker")
		},
		run: func(t *testing.T, image, name string, extra []string, args ...string) string {
			// No network: nothing here needs one, and a bridge is
			// shared with whatever else runs Docker on the host.
			a := append(append([]string{"run", "-d", "--network", "none", "--name", name}, extra...), image)
			return cli(t, "dockerd", "docker", append(a, args...)...)
		},
		exec: func(t *testing.T, name string, args ...string) {
			cli(t, "dockerd", "docker", append([]string{"exec", name}, args...)...)
		},
		remove: func(name string) { _, _ = testutil.RunErr("docker", "rm", "-f", name) },
	},
	{
		runtime: "podman",
		setup:   func(t *testing.T) string { return testutil.ImportBusybox(t, "podman") },
		run: func(t *testing.T, image, name string, extra []string, args ...string) string {
			// Podman's default crun, and its default rlimits above the
			// caller's, fail where the sandbox withholds CAP_SYS_RESOURCE.
			a := []string{"run", "-d", "--network", "none", "--name", name, "--runtime", "runc",
				"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"}
			a = append(append(a, extra...), image)
			return cli(t, "", "podman", append(a, args...)...)
		},
		exec: func(t *testing.T, name string, args ...string) {
			cli(t, "", "podman", append([]string{"exec", name}, args...)...)
		},
		remove: func(name string) { _, _ = testutil.RunErr("podman", "rm", "-f", "-t", "0", name) },
	},
}

func engineFor(t *testing.T, runtime string) engine {
	t.Helper()
	for _, e := range engines {
		if e.runtime == runtime {
			return e
		}
	}
	t.Fatalf("no engine %s", runtime)
	return engine{}
}

// containerOf is an event's container object, or nil.
func containerOf(l map[string]any) map[string]any {
	c, _ := l["container"].(map[string]any)
	return c
}

// execOf matches an exec event with exactly these arguments.
func execOf(argv string) func(map[string]any) bool {
	return func(l map[string]any) bool { return l["event"] == "exec" && args(l) == argv }
}

// For each runtime: the container's init carries the runtime's own id,
// the container's name and the runtime, with NSPID 1; an exec into it is
// attributed; `nstrace ns` names it too; and `--container NAME` shows it
// and nothing else.
func TestPrivilegedContainerRuntimes(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, e := range engines {
		t.Run(e.runtime, func(t *testing.T) { testRuntime(t, e) })
	}
}

func testRuntime(t *testing.T, e engine) {
	image := e.setup(t)
	mark := fmt.Sprintf("%d", rand.IntN(1_000_000))
	name := fmt.Sprintf("nstrace-%s-%s", e.runtime, mark)
	f := startFeed(t, "--json", "-e", "exec")

	t.Cleanup(func() { e.remove(name) })
	id := e.run(t, image, name, nil, "sh", "-c", "sleep 3600", mark)
	want := func(l map[string]any) error {
		c := containerOf(l)
		if c == nil || c["id"] != id || c["name"] != name || c["runtime"] != e.runtime {
			return fmt.Errorf("container %v, want id %s name %s runtime %s (cgroup %v)", c, id, name, e.runtime, l["cgroup"])
		}
		if e.cgroupV1 != "" && (l["cgroup_v1"] != e.cgroupV1 || l["cgroup"] != "/"+name) {
			return fmt.Errorf("cgroup %v (v1 %v), want /%s of the v1 %s hierarchy", l["cgroup"], l["cgroup_v1"], name, e.cgroupV1)
		}
		return nil
	}
	init := f.next(t, execOf("sh -c sleep 3600 "+mark))
	if err := want(init); err != nil {
		t.Errorf("init: %v", err)
	}
	if init["nspid"] != 1.0 {
		t.Errorf("init nspid %v, want 1", init["nspid"])
	}

	// nstrace ns names the container's pid namespace, and the
	// process, the same way.
	pidNS := uint64(init["ns"].(map[string]any)["pid"].(float64))
	if r := row(nsJSON(t), "pid", pidNS); r == nil || containerOf(r) == nil || containerOf(r)["name"] != name || containerOf(r)["id"] != id {
		t.Errorf("nstrace ns: pid namespace %d of %s is %v", pidNS, name, r)
	}
	pid := fmt.Sprint(int(init["pid"].(float64)))
	if p := nsJSON(t, "-p", pid); len(p) == 0 || !rowsName(p, name) {
		t.Errorf("nstrace ns -p %s: %v", pid, p)
	}

	g := startFeed(t, "--json", "-e", "exec", "--container", name)
	e.exec(t, name, "/bin/true", "in-"+mark)
	if err := exec.Command("/bin/true", "host-"+mark).Run(); err != nil {
		t.Fatal(err)
	}
	ex := f.next(t, execOf("/bin/true in-"+mark))
	if err := want(ex); err != nil {
		t.Errorf("exec: %v", err)
	}
	if ex["nspid"] == 1.0 || ex["ns"].(map[string]any)["pid"] != init["ns"].(map[string]any)["pid"] {
		t.Errorf("exec: nspid %v pid ns %v, init's %v", ex["nspid"], ex["ns"], init["ns"])
	}
	f.next(t, execOf("/bin/true host-"+mark))
	before := firstPayloadExec(t, g, "/bin/true in-"+mark)
	for _, l := range stopFeed(t, g, before) {
		if err := want(l); err != nil {
			t.Errorf("--container %s shows %s %q: %v", name, l["event"], args(l), err)
		}
	}
}

// firstPayloadExec reads a feed up to the exec of argv, which must be the
// first exec but runc's own: runc moves its `runc init` into the
// container's cgroup early, and that process's re-exec of runc may be
// seen there first. It returns the lines read, argv's exec last.
func firstPayloadExec(t *testing.T, f *feed, argv string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for {
		l := f.next(t, func(l map[string]any) bool { return l["event"] == "exec" })
		lines = append(lines, l)
		if args(l) == argv {
			return lines
		}
		if !runcInit(l) {
			t.Fatalf("an exec before %q: %q", argv, args(l))
		}
	}
}

// runcInit reports whether l is the exec of runc's own `runc init`, which
// runc moves into a container's cgroup before the container's state
// exists.
func runcInit(l map[string]any) bool {
	a, _ := l["args"].([]any)
	return len(a) == 2 && filepath.Base(fmt.Sprint(a[0])) == "runc" && a[1] == "init"
}

// rowsName reports whether an `nstrace ns -p` listing names the container
// on the process's own namespaces, and on no host namespace.
func rowsName(rows []map[string]any, name string) bool {
	named := false
	for _, r := range rows {
		c := containerOf(r)
		switch {
		case r["host"] == true && c != nil:
			return false
		case r["host"] == false && (c == nil || c["name"] != name):
			return false
		}
		named = named || c != nil
	}
	return named
}

// stopFeed interrupts a feed and returns every line it wrote, after those
// given.
func stopFeed(t *testing.T, f *feed, lines []map[string]any) []map[string]any {
	t.Helper()
	// Let the feed read what the kernel has queued.
	time.Sleep(200 * time.Millisecond)
	_ = f.cmd.Process.Signal(os.Interrupt)
	for l := range f.lines {
		lines = append(lines, l)
	}
	return lines
}

// Twenty short-lived containers back to back, for runc and containerd:
// every init is attributed to its own container, none to another, though
// each is gone before user space could look it up.
func TestPrivilegedContainerChurn(t *testing.T) {
	testutil.RequirePrivileged(t)
	const n = 20
	for _, rt := range []string{"runc", "containerd"} {
		t.Run(rt, func(t *testing.T) {
			e := engineFor(t, rt)
			image := e.setup(t)
			mark := fmt.Sprintf("churn%d", rand.IntN(1_000_000))
			f := startFeed(t, "--json", "-e", "exec")
			var bundle string
			if rt == "runc" {
				bundle = runcBundle(t, "/bin/sh", "-c", "echo "+mark)
			}
			for i := range n {
				name := fmt.Sprintf("%s-%d", mark, i)
				switch rt {
				case "runc":
					cmd := exec.Command("runc", "run", name)
					cmd.Dir = bundle
					if out, err := cmd.CombinedOutput(); err != nil {
						t.Fatalf("runc run %s: %v: %s", name, err, out)
					}
				case "containerd":
					cli(t, "containerd", "ctr", append(append([]string{}, ctrArgs...), "run", "--rm", image, name, "/bin/sh", "-c", "echo "+mark)...)
				}
			}
			seen := map[string]bool{}
			for len(seen) < n {
				l := f.next(t, execOf("/bin/sh -c echo "+mark))
				c := containerOf(l)
				if c == nil || c["runtime"] != rt || c["name"] != c["id"] || !strings.HasPrefix(fmt.Sprint(c["id"]), mark+"-") {
					t.Fatalf("init %v attributed to %v (cgroup %v %v)", l["pid"], c, l["cgroup"], l["cgroup_id"])
				}
				if id := c["id"].(string); seen[id] {
					t.Fatalf("two inits attributed to %s", id)
				}
				seen[c["id"].(string)] = true
			}
		})
	}
}

// Two containers sharing a pid namespace (a sidecar): `--container A`
// shows A's processes and not its sidecar's.
func TestPrivilegedContainerSharedPidNamespace(t *testing.T) {
	testutil.RequirePrivileged(t)
	t.Run("docker", testSharedPidNamespace)
}

func testSharedPidNamespace(t *testing.T) {
	e := engineFor(t, "docker")
	image := e.setup(t)
	mark := fmt.Sprintf("%d", rand.IntN(1_000_000))
	a, b := "nstrace-a-"+mark, "nstrace-b-"+mark
	t.Cleanup(func() { e.remove(b); e.remove(a) })
	idA := e.run(t, image, a, nil, "sh", "-c", "sleep 3600", "a"+mark)
	f := startFeed(t, "--json", "-e", "exec")
	g := startFeed(t, "--json", "-e", "exec", "--container", a)
	idB := e.run(t, image, b, []string{"--pid", "container:" + a}, "sh", "-c", "sleep 3600", "b"+mark)

	initB := f.next(t, execOf("sh -c sleep 3600 b"+mark))
	if c := containerOf(initB); c == nil || c["id"] != idB || c["name"] != b {
		t.Errorf("sidecar's init attributed to %v, want %s", c, b)
	}
	e.exec(t, b, "/bin/true", "b-"+mark)
	e.exec(t, a, "/bin/true", "a-"+mark)
	exB := f.next(t, execOf("/bin/true b-"+mark))
	exA := f.next(t, execOf("/bin/true a-"+mark))
	if exA["ns"].(map[string]any)["pid"] != exB["ns"].(map[string]any)["pid"] {
		t.Fatalf("the containers do not share a pid namespace: %v, %v", exA["ns"], exB["ns"])
	}
	if c := containerOf(exB); c == nil || c["id"] != idB {
		t.Errorf("exec in the sidecar attributed to %v", c)
	}
	if c := containerOf(exA); c == nil || c["id"] != idA {
		t.Errorf("exec in %s attributed to %v", a, c)
	}
	g.next(t, execOf("/bin/true a-"+mark))
	for _, l := range stopFeed(t, g, nil) {
		if c := containerOf(l); c == nil || c["id"] != idA {
			t.Errorf("--container %s shows %q of %v", a, args(l), c)
		}
	}
}

// `--container web` started before `docker run --name web` picks the
// container up when it starts: its very first exec is in the feed.
func TestPrivilegedContainerNamedBeforeStart(t *testing.T) {
	testutil.RequirePrivileged(t)
	t.Run("docker", testNamedBeforeStart)
}

// `--container web` given while web runs, so that the kernel filters on
// its cgroup, follows the name: web removed and run again (a new id, a
// new cgroup), the new container's execs are in the feed.
func TestPrivilegedContainerRunAgain(t *testing.T) {
	testutil.RequirePrivileged(t)
	t.Run("docker", testRunAgain)
}

func testRunAgain(t *testing.T) {
	e := engineFor(t, "docker")
	image := e.setup(t)
	mark := fmt.Sprintf("%d", rand.IntN(1_000_000))
	name := "nstrace-again-" + mark
	t.Cleanup(func() { e.remove(name) })
	first := e.run(t, image, name, nil, "sh", "-c", "sleep 3600", "first"+mark)
	g := startFeed(t, "--json", "-e", "exec", "--container", name)
	e.exec(t, name, "/bin/true", "first-"+mark)
	lines := g.until(t, execOf("/bin/true first-"+mark))
	e.remove(name)
	again := e.run(t, image, name, nil, "sh", "-c", "sleep 3600", "again"+mark)
	e.exec(t, name, "/bin/true", "again-"+mark)
	lines = append(lines, g.until(t, execOf("sh -c sleep 3600 again"+mark), execOf("/bin/true again-"+mark))...)
	for _, l := range stopFeed(t, g, lines) {
		if c := containerOf(l); c == nil || c["name"] != name || c["id"] != first && c["id"] != again {
			t.Errorf("--container %s shows %q of %v", name, args(l), c)
		}
	}
}

func testNamedBeforeStart(t *testing.T) {
	e := engineFor(t, "docker")
	image := e.setup(t)
	mark := fmt.Sprintf("%d", rand.IntN(1_000_000))
	name := "nstrace-web-" + mark
	g := startFeed(t, "--json", "-e", "exec", "--container", name)
	t.Cleanup(func() { e.remove(name) })
	id := e.run(t, image, name, nil, "sh", "-c", "sleep 3600", mark)
	before := firstPayloadExec(t, g, "sh -c sleep 3600 "+mark)
	if init := before[len(before)-1]; init["nspid"] != 1.0 {
		t.Errorf("--container %s before start: init nspid %v", name, init["nspid"])
	}
	e.exec(t, name, "/bin/true", mark)
	g.next(t, execOf("/bin/true "+mark))
	for _, l := range stopFeed(t, g, before) {
		if c := containerOf(l); c == nil || c["id"] != id || c["name"] != name || c["runtime"] != "docker" {
			t.Errorf("--container %s shows %q of %v", name, args(l), c)
		}
	}
}
