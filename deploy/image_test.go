// SPDX-License-Identifier: Apache-2.0

// Package deploy holds the tests of what deploy/ ships: the image, run as
// the DaemonSet runs it, and the manifests.
package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
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

// docker is a Docker daemon of the test's own (deploy/image/with-docker
// --private), so that no other user of the host's Docker is disturbed.
type docker struct {
	host string // DOCKER_HOST
	dir  string // the daemon's state: data root under data/
}

func startDocker(t *testing.T) *docker {
	t.Helper()
	for _, tool := range []string{"dockerd", "containerd", "docker"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (apt-get install docker.io)", tool)
		}
	}
	hostFile := filepath.Join(t.TempDir(), "docker-host")
	cmd := exec.Command("image/with-docker", "--private", "sh", "-c", `echo "$DOCKER_HOST" >`+hostFile+`; exec cat >/dev/null`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Errorf("the test's dockerd did not stop")
		}
	})
	var host string
	if !testutil.Eventually(30*time.Second, 50*time.Millisecond, func() bool {
		if b, err := os.ReadFile(hostFile); err == nil && bytes.HasSuffix(b, []byte("\n")) {
			host = strings.TrimSpace(string(b))
			return true
		}
		select {
		case err := <-exited:
			t.Fatalf("starting dockerd: %v: %s", err, stderr.String())
		default:
		}
		return false
	}) {
		t.Fatalf("dockerd did not start: %s", stderr.String())
	}
	return &docker{host: host, dir: filepath.Dir(strings.TrimPrefix(host, "unix://"))}
}

func (d *docker) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.host, "DOCKER_BUILDKIT=0")
	return cmd
}

func (d *docker) run(t *testing.T, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := d.cmd(args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker %v: %v: %s", args, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// busyboxImage imports a root filesystem of busybox as an image: nothing
// is pulled.
func (d *docker) busyboxImage(t *testing.T, name string) {
	t.Helper()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox is needed (apt-get install busybox-static)")
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", busybox, filepath.Join(root, "bin", "busybox")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	for _, a := range []string{"sh", "true", "sleep"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	tar := exec.Command("tar", "-C", root, "-c", ".")
	imp := d.cmd("import", "-", name)
	pipe, _ := tar.StdoutPipe()
	imp.Stdin = pipe
	if err := tar.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v: %s", err, out)
	}
	_ = tar.Wait()
}

// daemonSetCaps are the capabilities the DaemonSet grants. Docker
// releases that do not know CAP_BPF and CAP_PERFMON (Debian 12's 20.10)
// get CAP_SYS_ADMIN in their place, which the kernel takes for both.
func (d *docker) daemonSetCaps(t *testing.T, image string) []string {
	t.Helper()
	caps := []string{"BPF", "PERFMON", "DAC_READ_SEARCH", "SYS_PTRACE"}
	out, err := d.cmd("run", "--rm", "--cap-drop", "ALL", "--cap-add", "BPF", "--cap-add", "PERFMON", image, "--version").CombinedOutput()
	if err != nil {
		if !strings.Contains(string(out), "unknown capability") {
			t.Fatalf("docker run %s --version: %v: %s", image, err, out)
		}
		caps = append([]string{"SYS_ADMIN"}, caps[2:]...)
	}
	return caps
}

// The image, built by make image and run as the DaemonSet runs it (the
// host's pid namespace, its capabilities and read-only mounts), writes
// NDJSON events on stdout: a Docker container's tagged with it, a host
// process's with its host pid and no container.
func TestPrivilegedImage(t *testing.T) {
	testutil.RequirePrivileged(t)
	d := startDocker(t)
	m := fmt.Sprint(rand.IntN(1_000_000))
	image := "nstrace:test-" + m
	mk := exec.Command("make", "-C", "..", "image", "IMAGE="+image, "IMAGE_TAR="+filepath.Join(t.TempDir(), "image.tar"))
	mk.Env = append(os.Environ(), "DOCKER_HOST="+d.host)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v: %s", err, out)
	}
	if got := d.run(t, "image", "inspect", "-f", "{{len .RootFS.Layers}} {{.Config.Entrypoint}} {{.Config.Cmd}}", image); got != "1 [/nstrace] [--json]" {
		t.Errorf("image: layers, entrypoint, cmd: %q, want one layer, /nstrace --json", got)
	}
	d.busyboxImage(t, "nstrace-test-busybox:"+m)

	agent := "nstrace-agent-" + m
	args := []string{"run", "--rm", "--name", agent, "--pid=host", "--cap-drop", "ALL"}
	for _, c := range d.daemonSetCaps(t, image) {
		args = append(args, "--cap-add", c)
	}
	// The DaemonSet's mounts; this daemon keeps its containers' records
	// under its own data root.
	for src, dst := range map[string]string{
		"/sys/kernel/btf": "/sys/kernel/btf", "/sys/fs/cgroup": "/sys/fs/cgroup", "/run/runc": "/run/runc",
		filepath.Join(d.dir, "data", "containers"): "/var/lib/docker/containers",
	} {
		if _, err := os.Stat(src); err == nil {
			args = append(args, "-v", src+":"+dst+":ro")
		}
	}
	args = append(args, image, "--json", "-e", "exec")
	run := d.cmd(args...)
	var stderr bytes.Buffer
	run.Stderr = &stderr
	stdout, err := run.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = d.cmd("rm", "-f", agent).Run()
		_ = run.Wait()
	})
	lines := make(chan map[string]any, 10000)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l map[string]any
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Errorf("not JSON: %q", sc.Text())
				continue
			}
			lines <- l
		}
		close(lines)
	}()
	next := func(what string, match func(map[string]any) bool, poke func()) map[string]any {
		t.Helper()
		timeout := time.After(20 * time.Second)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		if poke != nil {
			poke()
		}
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the image's output ended before %s; stderr: %s", what, stderr.String())
				}
				if match(l) {
					return l
				}
			case <-tick.C:
				if poke != nil {
					poke()
				}
			case <-timeout:
				t.Fatalf("no %s from the image; stderr: %s", what, stderr.String())
			}
		}
	}
	exe := func(want ...string) func(map[string]any) bool {
		return func(l map[string]any) bool {
			return l["event"] == "exec" && fmt.Sprint(l["args"]) == fmt.Sprint(toAny(want))
		}
	}
	// Events flow once a host exec shows up.
	next("first event", exe("/bin/true", "ready-"+m), func() { _ = exec.Command("/bin/true", "ready-"+m).Run() })

	box := "nstrace-box-" + m
	id := d.run(t, "run", "-d", "--name", box, "nstrace-test-busybox:"+m, "/bin/true", "box-"+m)
	t.Cleanup(func() { _ = d.cmd("rm", "-f", box).Run() })
	in := next("exec in a container", exe("/bin/true", "box-"+m), nil)
	c, _ := in["container"].(map[string]any)
	if c == nil || c["id"] != id || c["runtime"] != "docker" || c["name"] != box || in["nspid"] != 1.0 {
		t.Errorf("exec in container %s (%s): nspid %v container %v", box, id, in["nspid"], in["container"])
	}

	pidFile := filepath.Join(t.TempDir(), "pid")
	if out, err := exec.Command("sh", "-c", "echo $$ >"+pidFile+"; exec /bin/true host-"+m).CombinedOutput(); err != nil {
		t.Fatalf("sh: %v: %s", err, out)
	}
	host := next("host exec", exe("/bin/true", "host-"+m), nil)
	pid, _ := os.ReadFile(pidFile)
	if fmt.Sprintf("%.0f", host["pid"]) != strings.TrimSpace(string(pid)) || host["container"] != nil || host["cgroup"] == "" {
		t.Errorf("host exec: pid %v (want %s), container %v, cgroup %q", host["pid"], strings.TrimSpace(string(pid)), host["container"], host["cgroup"])
	}

	// docker stop: SIGTERM, the summary on stderr, exit 0.
	d.run(t, "stop", agent)
	for range lines {
	}
	if err := run.Wait(); err != nil {
		t.Errorf("the image after docker stop: %v; stderr %s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), " events, 0 lost") {
		t.Errorf("the image's stderr: %q", stderr.String())
	}
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
