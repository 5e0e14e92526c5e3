// SPDX-License-Identifier: Apache-2.0

package testutil

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The container runtimes the privileged tests drive, each from its Debian
// package, all offline: the image is a busybox root filesystem built here
// and imported locally.

// BusyboxImage is the name the busybox image is imported under.
const BusyboxImage = "nstrace-busybox:test"

// BusyboxApplets are the commands the busybox root filesystem has.
var BusyboxApplets = []string{"sh", "sleep", "true", "top", "echo", "cat", "ps"}

// NeedTools fails t unless every tool is in PATH, naming the package that
// brings it: in an opted-in run a missing tool is a failure, not a skip.
func NeedTools(t testing.TB, tools ...string) {
	t.Helper()
	pkgs := map[string]string{
		"runc": "runc", "busybox": "busybox-static", "containerd": "containerd", "ctr": "containerd",
		"docker": "docker.io", "dockerd": "docker.io", "podman": "podman", "ip": "iproute2", "dot": "graphviz",
		"unshare": "util-linux", "nsenter": "util-linux", "lsns": "util-linux", "setpriv": "util-linux", "taskset": "util-linux",
		"promtool": "prometheus", "prometheus": "prometheus", "groff": "groff-base",
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			pkg := pkgs[tool]
			if pkg == "" {
				pkg = tool
			}
			t.Fatalf("%s is needed: apt-get install %s (make test installs it)", tool, pkg)
		}
	}
}

// BusyboxRootfs writes a root filesystem of busybox and its applets'
// links into a new directory under dir and returns it.
func BusyboxRootfs(t testing.TB, dir string) string {
	t.Helper()
	NeedTools(t, "busybox")
	busybox, _ := exec.LookPath("busybox")
	root := filepath.Join(dir, "rootfs")
	bin := filepath.Join(root, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range BusyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(bin, a)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

var (
	layerOnce sync.Once
	layer     []byte
	layerErr  error
)

// busyboxLayer is the busybox root filesystem as a tar archive: what
// docker import and podman import take, and the image's one layer.
func busyboxLayer(t testing.TB) []byte {
	t.Helper()
	NeedTools(t, "busybox")
	layerOnce.Do(func() {
		busybox, _ := exec.LookPath("busybox")
		bin, err := os.ReadFile(busybox)
		if err != nil {
			layerErr = err
			return
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		mod := time.Unix(0, 0)
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755, ModTime: mod})
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777, ModTime: mod})
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: mod})
		_, _ = tw.Write(bin)
		for _, a := range BusyboxApplets {
			_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: mod})
		}
		layerErr = tw.Close()
		layer = buf.Bytes()
	})
	if layerErr != nil {
		t.Fatalf("building the busybox layer: %v", layerErr)
	}
	return layer
}

// BusyboxTar writes the busybox root filesystem as a tar file and returns
// its path.
func BusyboxTar(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "busybox.tar")
	if err := os.WriteFile(path, busyboxLayer(t), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// BusyboxOCIArchive writes an OCI image layout archive of the busybox root
// filesystem, named name, for `ctr image import`.
func BusyboxOCIArchive(t testing.TB, name string) string {
	t.Helper()
	return OCIArchive(t, name, busyboxLayer(t), map[string]any{"Env": []string{"PATH=/bin"}})
}

// OCIArchive writes an OCI image layout archive of one layer (a tar),
// named name, with config as the image's runtime configuration (Env,
// Entrypoint, Cmd ...), for `ctr image import`; it returns its path.
func OCIArchive(t testing.TB, name string, layer []byte, config map[string]any) string {
	t.Helper()
	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return d, len(b)
	}
	layerDigest, layerSize := put(layer)
	imageConfig, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux", "config": config,
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	configDigest, configSize := put(imageConfig)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": configSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	})
	manifestDigest, manifestSize := put(manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifestDigest, "size": manifestSize,
			"platform":    map[string]any{"architecture": runtime.GOARCH, "os": "linux"},
			"annotations": map[string]any{"io.containerd.image.name": name},
		}},
	})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	file := func(name string, b []byte) {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0)})
		_, _ = tw.Write(b)
	}
	file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	file("index.json", index)
	for d, b := range blobs {
		file("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), b)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "image-*.oci.tar")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// Run runs a command with no stdin and fails t with its output if it
// fails; it returns stdout, trimmed.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := RunErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// RunErr runs a command with no stdin, within two minutes; its error
// carries what the command wrote to stderr.
func RunErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	// Files, not pipes: a detached container or a daemon's helper keeps
	// what it is given open, and a pipe would never reach its end.
	stdout, err := os.CreateTemp("", "nstrace-test-out")
	if err != nil {
		return "", err
	}
	defer os.Remove(stdout.Name())
	defer stdout.Close()
	stderr, err := os.CreateTemp("", "nstrace-test-err")
	if err != nil {
		return "", err
	}
	defer os.Remove(stderr.Name())
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err = cmd.Run()
	out, _ := os.ReadFile(stdout.Name())
	if err != nil {
		msg, _ := os.ReadFile(stderr.Name())
		return string(out), fmt.Errorf("%w: %s", err, strings.TrimSpace(string(msg)))
	}
	return strings.TrimSpace(string(out)), nil
}

// A daemon the tests started, to be stopped when they are done.
type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

var (
	daemonsMu sync.Mutex
	started   []*daemon
)

const (
	// ContainerdSocket and DockerSocket are where the packages' daemons
	// listen by default.
	ContainerdSocket = "/run/containerd/containerd.sock"
	DockerSocket     = "/var/run/docker.sock"
)

// containerdUp reports whether a containerd answers on its socket.
func containerdUp() bool {
	_, err := RunErr("ctr", "--address", ContainerdSocket, "--connect-timeout", "2s", "version")
	return err == nil
}

// dockerUp reports whether a Docker daemon answers on its socket.
func dockerUp() bool {
	c := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", DockerSocket)
		},
	}}
	resp, err := c.Get("http://docker/_ping")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Containerd makes sure a containerd answers at ContainerdSocket: the one
// running, or one started for the tests (there may be no init system to
// start it), stopped by StopDaemons.
func Containerd(t testing.TB) {
	t.Helper()
	NeedTools(t, "containerd", "ctr", "runc")
	ensure(t, "containerd", containerdUp)
}

// Docker makes sure a Docker daemon answers at DockerSocket, as
// Containerd does.
func Docker(t testing.TB) {
	t.Helper()
	NeedTools(t, "dockerd", "docker", "runc")
	ensure(t, "dockerd", dockerUp)
}

// ensure starts the daemon name, with its packaged defaults, unless one
// answers already.
func ensure(t testing.TB, name string, up func() bool) {
	t.Helper()
	daemonsMu.Lock()
	defer daemonsMu.Unlock()
	if up() {
		return
	}
	for _, d := range started {
		select {
		case <-d.done:
		default:
			if d.name == name {
				// Ours runs but does not answer: wait for it below.
				waitUp(t, d, up)
				return
			}
		}
	}
	logf, err := os.CreateTemp("", "nstrace-test-"+name+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{name: name, cmd: exec.Command(name), done: make(chan struct{}), log: logf.Name()}
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Its own process group: a signal for the tests is not its.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	logf.Close()
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	started = append(started, d)
	waitUp(t, d, up)
}

// waitUp waits for d to answer. A daemon that exits at once may have lost
// a race with one started at the same moment by someone else: that one
// serves as well.
func waitUp(t testing.TB, d *daemon, up func() bool) {
	t.Helper()
	Eventually(90*time.Second, 100*time.Millisecond, func() bool { return up() || exited(d.done) })
	if up() {
		return
	}
	log, _ := os.ReadFile(d.log)
	if exited(d.done) {
		t.Fatalf("%s exited: %s", d.name, tail(string(log), 20))
	}
	t.Fatalf("%s does not answer after 90s: %s", d.name, tail(string(log), 20))
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// StopDaemons stops the daemons the tests started, newest first (dockerd
// uses the containerd it found), and only those.
func StopDaemons() {
	daemonsMu.Lock()
	defer daemonsMu.Unlock()
	for i := len(started) - 1; i >= 0; i-- {
		d := started[i]
		stopDaemon(d.cmd.Process, d.done)
		os.Remove(d.log)
	}
	started = nil
}

// stopDaemon ends a daemon the tests started: SIGTERM, then SIGKILL if
// it has not exited (done) within 30 seconds.
func stopDaemon(p *os.Process, done <-chan struct{}) {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.Kill()
		<-done
	}
}

// DaemonGone turns a runtime command's failure into a hint when the
// daemon behind it no longer answers (another user of a shared daemon
// stopped it): the test is to be run again.
func DaemonGone(name string) string {
	up := map[string]func() bool{"containerd": containerdUp, "dockerd": dockerUp}[name]
	if up != nil && !up() {
		return fmt.Sprintf(" (%s no longer answers: stopped by another of its users? run the test again)", name)
	}
	return ""
}

// Image references the busybox image is run by, once imported.
const (
	DockerBusybox     = BusyboxImage
	PodmanBusybox     = "localhost/" + BusyboxImage
	ContainerdBusybox = "docker.io/library/" + BusyboxImage
)

// ImportBusybox imports the busybox image into docker, containerd (ctr,
// namespace default) or podman, from a local archive, and returns the
// reference to run it by.
func ImportBusybox(t testing.TB, runtime string) string {
	t.Helper()
	switch runtime {
	case "docker":
		out, err := RunErr("docker", "import", BusyboxTar(t), DockerBusybox)
		if err != nil {
			t.Fatalf("docker import: %v%s (%s)", err, DaemonGone("dockerd"), out)
		}
		return DockerBusybox
	case "containerd":
		out, err := RunErr("ctr", "--address", ContainerdSocket, "image", "import", BusyboxOCIArchive(t, ContainerdBusybox))
		if err != nil {
			t.Fatalf("ctr image import: %v%s (%s)", err, DaemonGone("containerd"), out)
		}
		return ContainerdBusybox
	case "podman":
		NeedTools(t, "podman", "runc")
		SharedNetnsDir(t)
		Run(t, "podman", "import", BusyboxTar(t), PodmanBusybox)
		return PodmanBusybox
	}
	t.Fatalf("no image import for %s", runtime)
	return ""
}
