// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/probe"
	"github.com/nstrace/nstrace/internal/testutil"
)

// A container's own namespaces, as a node agent has them (all but the
// host's pid namespace).
var containerLike = []string{"unshare", "--mount", "--uts", "--ipc", "--net", "--cgroup"}

// In namespaces of its own, nstrace still knows the host's: --host keeps
// host processes and drops others.
func TestPrivilegedHostFilterInOwnNamespaces(t *testing.T) {
	testutil.RequirePrivileged(t)
	m := fmt.Sprint(rand.IntN(1_000_000))
	f := feedUnder(t, append(inNewCgroup(t), containerLike...), "--host", "-e", "exec", "--json")
	self := nsLinks(t, "self", "mnt", "uts", "ipc", "net", "cgroup")
	agent := nsLinks(t, fmt.Sprint(f.cmd.Process.Pid), "mnt", "uts", "ipc", "net", "cgroup")
	for typ, l := range agent {
		if l == self[typ] {
			t.Fatalf("nstrace runs in the host's %s namespace %s", typ, l)
		}
	}
	mustRun(t, "/bin/true", "host-"+m)
	mustRun(t, "unshare", "--net", "--uts", "/bin/true", "ns-"+m)
	mustRun(t, "/bin/true", "end-"+m)
	host := f.next(t, execArgs("/bin/true", "host-"+m))
	// Cgroup paths are the host's, though nstrace's cgroup namespace
	// starts below the hierarchy's root.
	if want := ownCgroup(t); host["cgroup"] != want {
		t.Errorf("host process: cgroup %q, want %q", host["cgroup"], want)
	}
	hostNS := host["ns"].(map[string]any)
	for typ, l := range self {
		if want := fmt.Sprintf("%s:[%.0f]", typ, hostNS[typ]); want != l {
			t.Errorf("host process: feed says %s, /proc/self says %s", want, l)
		}
	}
	f.next(t, func(l map[string]any) bool {
		if args(l) == "/bin/true ns-"+m {
			t.Errorf("--host shows a process in new namespaces: %v", l)
		}
		return args(l) == "/bin/true end-"+m
	})
}

// In namespaces of its own, the human view shows only the namespaces
// that are not the host's, and nstrace ns marks the host's as the host's.
func TestPrivilegedHumanViewInOwnNamespaces(t *testing.T) {
	testutil.RequirePrivileged(t)
	m := fmt.Sprint(rand.IntN(1_000_000))
	var out, stderr bytes.Buffer
	cmd, pipe := startUnder(t, containerLike, &stderr, "-e", "exec")
	done := make(chan struct{})
	go func() { _, _ = out.ReadFrom(pipe); close(done) }()
	mustRun(t, "/bin/true", "host-"+m)
	mustRun(t, "unshare", "--net", "--uts", "/bin/true", "ns-"+m)
	time.Sleep(300 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	<-done
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nstrace: %v: %s", err, stderr.String())
	}
	var host, other string
	for _, l := range humanLines(t, out.String()) {
		switch {
		case l["EVENT"] == "exec" && strings.HasPrefix(l["INFO"], "/bin/true host-"+m):
			host = l["INFO"]
		case l["EVENT"] == "exec" && strings.HasPrefix(l["INFO"], "/bin/true ns-"+m):
			other = l["INFO"]
		}
	}
	if host != "/bin/true host-"+m {
		t.Errorf("host process line %q, want no namespaces shown; feed:\n%s", host, out.String())
	}
	if !strings.Contains(other, " net:[") || !strings.Contains(other, " uts:[") || strings.Contains(other, "mnt:[") || strings.Contains(other, "ipc:[") {
		t.Errorf("process in new net and uts namespaces: %q, want net and uts only", other)
	}

	// nstrace ns, in the same namespaces: the host's net namespace is the
	// host's, nstrace's own is not.
	ns := exec.Command(containerLike[0], append(containerLike[1:], os.Args[0], "ns", "--json")...)
	ns.Env = append(os.Environ(), mainEnv+"=1")
	b, err := ns.Output()
	if err != nil {
		t.Fatalf("nstrace ns in its own namespaces: %v", err)
	}
	var hostNet uint64
	fmt.Sscanf(nsLinks(t, "self", "net")["net"], "net:[%d]", &hostNet)
	found := false
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if r["type"] == "net" && uint64(r["ns"].(float64)) == hostNet {
			found = true
			if r["host"] != true {
				t.Errorf("nstrace ns in its own namespaces: host net namespace %v not marked host", r)
			}
		}
	}
	if !found {
		t.Errorf("nstrace ns in its own namespaces does not list the host's net namespace %d", hostNet)
	}
}

// Outside the host's pid namespace nstrace refuses in one line.
func TestPrivilegedRefusesOutsideHostPIDNamespace(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, args := range [][]string{{"-e", "exec"}, {"ns"}} {
		cmd := exec.Command("unshare", append([]string{"--fork", "--pid", "--mount-proc", os.Args[0]}, args...)...)
		cmd.Env = append(os.Environ(), mainEnv+"=1")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errorsAs(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("%v in a new pid namespace: %v, want exit 1", args, err)
		}
		msg := stderr.String()
		if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "not in the host's pid namespace") || !strings.Contains(msg, "hostPID") || stdout.Len() != 0 {
			t.Errorf("%v in a new pid namespace: stdout %q stderr %q", args, stdout.String(), msg)
		}
	}
}

func errorsAs(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*ee = e
	return ok
}

// capNames are the capabilities' setpriv names (bpf, perfmon ...).
func capNames(caps ...probe.Capability) string {
	var s []string
	for _, c := range caps {
		s = append(s, "+"+strings.ToLower(strings.TrimPrefix(c.Name, "CAP_")))
	}
	return strings.Join(s, ",")
}

// onlyCaps runs a command as root with no capabilities but caps, as a
// container's root with a DaemonSet's capabilities runs.
func onlyCaps(t *testing.T, caps ...probe.Capability) []string {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv is needed (apt-get install util-linux)")
	}
	set := "-all," + capNames(caps...)
	return []string{"setpriv", "--inh-caps=" + set, "--ambient-caps=" + set, "--bounding-set=" + set, "--"}
}

// With the capabilities docs/node-agent.md names, and no others, nstrace traces;
// with the required ones only it traces and names, in one line, what the
// others would add; without one of the required ones it stops in one line.
func TestPrivilegedCapabilitiesOnly(t *testing.T) {
	testutil.RequirePrivileged(t)
	m := fmt.Sprint(rand.IntN(1_000_000))
	all := append(probe.RequiredHere(), probe.Recommended...)

	f := feedUnder(t, onlyCaps(t, all...), "-e", "exec", "--json")
	mustRun(t, "/bin/true", "caps-"+m)
	l := f.next(t, execArgs("/bin/true", "caps-"+m))
	if l["cgroup"] == "" {
		t.Errorf("with %s: no cgroup path: %v", capNames(all...), l)
	}
	if f.stderr.Len() != 0 {
		t.Errorf("with every capability named: stderr %q", f.stderr.String())
	}

	g := feedUnder(t, onlyCaps(t, probe.RequiredHere()...), "-e", "exec", "--json")
	mustRun(t, "/bin/true", "required-"+m)
	g.next(t, execArgs("/bin/true", "required-"+m))
	want := "nstrace: without CAP_DAC_READ_SEARCH: no cgroup paths; without CAP_SYS_PTRACE: no setns owners; --container, --ns pid:PID and nstrace ns miss processes it may not ptrace\n"
	if got := g.stderr.String(); got != want {
		t.Errorf("with the required capabilities only: stderr %q, want %q", got, want)
	}

	for _, drop := range probe.RequiredHere() {
		var keep []probe.Capability
		for _, c := range all {
			if c.Name != drop.Name {
				keep = append(keep, c)
			}
		}
		argv := append(onlyCaps(t, keep...), os.Args[0], "-e", "exec")
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), mainEnv+"=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errorsAs(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("without %s: %v, want exit 1", drop.Name, err)
		}
		if msg := stderr.String(); strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "missing: "+drop.Name) {
			t.Errorf("without %s: stderr %q, want one line naming it", drop.Name, msg)
		}
	}
}

// nodeAgentCaps are the DaemonSet's capabilities (deploy/kubernetes),
// with SYS_RESOURCE where the kernel needs it (as the manifest says).
func nodeAgentCaps() []string {
	var out []string
	for _, c := range append(probe.RequiredHere(), probe.Recommended...) {
		out = append(out, c.Name)
	}
	return out
}

// agentBundle builds a runc bundle that runs this test binary as nstrace
// the way the DaemonSet runs it: the host's pid namespace, namespaces of
// its own for the rest, the DaemonSet's capabilities only, the runtimes'
// state and the cgroup hierarchy mounted read-only.
func agentBundle(t *testing.T, args ...string) string {
	t.Helper()
	dir := runcBundle(t, "/bin/sh")
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	self, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	proc := cfg["process"].(map[string]any)
	proc["args"] = append([]string{"/nstrace/" + filepath.Base(self), "--ready-fd=3"}, args...)
	proc["env"] = []string{"PATH=/bin", mainEnv + "=1"}
	caps := nodeAgentCaps()
	proc["capabilities"] = map[string]any{"bounding": caps, "effective": caps, "permitted": caps}
	lin := cfg["linux"].(map[string]any)
	var nss []any
	for _, n := range lin["namespaces"].([]any) {
		if n.(map[string]any)["type"] != "pid" {
			nss = append(nss, n)
		}
	}
	lin["namespaces"] = nss
	// A cgroup of its own, as a pod's container has, below which its
	// cgroup namespace starts.
	lin["cgroupsPath"] = fmt.Sprintf("/nstrace-agent-%d", rand.IntN(1_000_000))
	mounts := []any{}
	for _, m := range cfg["mounts"].([]any) {
		// The container's own /proc would be of its own pid namespace's
		// making; with the host's pid namespace it is the host's.
		if d := m.(map[string]any)["destination"]; d != "/sys/fs/cgroup" {
			mounts = append(mounts, m)
		}
	}
	bind := func(src, dst string) {
		if _, err := os.Stat(src); err == nil {
			mounts = append(mounts, map[string]any{"destination": dst, "type": "bind", "source": src, "options": []string{"rbind", "ro"}})
		}
	}
	bind(filepath.Dir(self), "/nstrace")
	// A test binary built with cgo needs the host's C library.
	for _, d := range []string{"/lib", "/lib64", "/usr/lib", "/usr/lib64"} {
		fi, err := os.Lstat(d)
		switch {
		case err != nil:
		case fi.Mode()&os.ModeSymlink != 0:
			to, _ := os.Readlink(d)
			_ = os.MkdirAll(filepath.Join(dir, "rootfs", filepath.Dir(d)), 0o755)
			if err := os.Symlink(to, filepath.Join(dir, "rootfs", d)); err != nil {
				t.Fatal(err)
			}
		case fi.IsDir():
			bind(d, d)
		}
	}
	// runc's state directory may not be there yet on a fresh host: made
	// now, as the DaemonSet's DirectoryOrCreate does.
	if err := os.MkdirAll("/run/runc", 0o700); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"/sys/fs/cgroup", "/run/runc", "/run/containerd", "/run/docker/runtime-runc", "/var/lib/docker/containers", "/run/containers"} {
		bind(d, d)
	}
	cfg["mounts"] = mounts
	b, _ = json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// nstrace in a runc container, as the DaemonSet runs it, attributes a
// container's events to it and a host process's to none, with host pids.
func TestPrivilegedAgentInRuncContainer(t *testing.T) {
	testutil.RequirePrivileged(t)
	m := fmt.Sprint(rand.IntN(1_000_000))
	agentID, boxID := "nstrace-agent-"+m, "nstrace-box-"+m
	agent := agentBundle(t, "-e", "exec", "--json")
	t.Cleanup(func() { _ = exec.Command("runc", "delete", "-f", agentID).Run() })
	f := feedArgv(t, []string{"runc", "run", "--preserve-fds", "1", "--bundle", agent, agentID})

	box := runcBundle(t, "/bin/sh", "-c", "sleep 3600")
	runc(t, box, "run", "-d", boxID)
	t.Cleanup(func() {
		_ = exec.Command("runc", "kill", boxID, "KILL").Run()
		_ = exec.Command("runc", "delete", "-f", boxID).Run()
	})
	runc(t, box, "exec", boxID, "/bin/true", "box-"+m)
	pidFile := filepath.Join(t.TempDir(), "pid")
	mustRun(t, "sh", "-c", "echo $$ >"+pidFile+"; exec /bin/true host-"+m)

	in := f.next(t, execArgs("/bin/true", "box-"+m))
	c, _ := in["container"].(map[string]any)
	if c == nil || c["name"] != boxID || c["runtime"] != "runc" {
		t.Errorf("runc exec in %s: container %v", boxID, in["container"])
	}
	if in["nspid"] == in["pid"] {
		t.Errorf("runc exec in %s: nspid %v is its host pid", boxID, in["nspid"])
	}
	host := f.next(t, execArgs("/bin/true", "host-"+m))
	b, _ := os.ReadFile(pidFile)
	if want := strings.TrimSpace(string(b)); fmt.Sprintf("%.0f", host["pid"]) != want || host["nspid"] != host["pid"] {
		t.Errorf("host process: pid %v nspid %v, want %s", host["pid"], host["nspid"], want)
	}
	if host["container"] != nil {
		t.Errorf("host process attributed to %v", host["container"])
	}
	if host["cgroup"] == "" {
		t.Errorf("host process: no cgroup path: %v", host)
	}
	_ = f.cmd.Process.Signal(os.Interrupt)
	for range f.lines {
	}
	if err := f.cmd.Wait(); err != nil {
		t.Errorf("nstrace in a container after SIGINT: %v; stderr %s", err, f.stderr)
	}
	if !strings.Contains(f.stderr.String(), " events, 0 lost") {
		t.Errorf("nstrace in a container: stderr %q", f.stderr)
	}
}

// SIGHUP reopens -o FILE, as logrotate expects: after the move, new events
// go to a new FILE and the old one is closed.
func TestPrivilegedSIGHUPReopensOutput(t *testing.T) {
	testutil.RequirePrivileged(t)
	m := fmt.Sprint(rand.IntN(1_000_000))
	out := filepath.Join(t.TempDir(), "feed.json")
	var stderr bytes.Buffer
	cmd, _ := startRaw(t, &stderr, "--json", "-e", "exec", "-o", out)
	waitFor := func(file, marker string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if b, _ := os.ReadFile(file); strings.Contains(string(b), marker) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never in %s", marker, file)
			}
		}
	}
	mustRun(t, "/bin/true", "before-"+m)
	waitFor(out, "before-"+m)
	if err := os.Rename(out, out+".1"); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	// The file is reopened before the next event is written.
	for i, deadline := 0, time.Now().Add(10*time.Second); ; i++ {
		mustRun(t, "/bin/true", fmt.Sprintf("poke-%s-%d", m, i))
		if _, err := os.Stat(out); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
		if time.Now().After(deadline) {
			t.Fatal("no new output file after SIGHUP")
		}
	}
	mustRun(t, "/bin/true", "after-"+m)
	waitFor(out, "after-"+m)
	if b, _ := os.ReadFile(out + ".1"); strings.Contains(string(b), "after-"+m) {
		t.Errorf("an event after SIGHUP went to the moved file")
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	for _, fd := range fds {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", cmd.Process.Pid, fd.Name())); l == out+".1" {
			t.Errorf("the moved file is still open (fd %s)", fd.Name())
		}
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nstrace: %v: %s", err, stderr.String())
	}
}
