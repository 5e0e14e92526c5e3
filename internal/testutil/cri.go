// SPDX-License-Identifier: Apache-2.0

package testutil

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Kubernetes pods for the tests, through containerd's CRI plugin: the API
// a kubelet calls, driven with crictl the way a kubelet with the cgroupfs
// driver drives it, on a containerd of the tests' own. Its own, always,
// even where a containerd serves CRI already: the pods' network is a
// CNI configuration of its own (the packaged containerd reads
// /etc/cni/net.d, which other users of the host share), its images and
// pods are nobody else's, and the path a fresh machine takes is the one
// every run takes.

// CrictlVersion is the cri-tools release the tests drive CRI with; make
// test-deps installs it in the module's bin/, reading it from the same
// file.
var CrictlVersion = strings.TrimSpace(crictlVersion)

//go:embed crictl-version
var crictlVersion string

// PauseImage is the pod sandbox's image, the one containerd's CRI plugin
// runs by default; the tests build it (internal/testutil/pause).
const PauseImage = "registry.k8s.io/pause:3.6"

// Namespace modes of CRI's NamespaceOption.
const (
	NamespacePod       = 0 // shared with the pod's sandbox
	NamespaceContainer = 1 // the container's own
	NamespaceNode      = 2 // the host's (hostPID, hostNetwork, hostIPC)
)

// PodConfig is CRI's PodSandboxConfig as crictl reads it (JSON), with
// the fields the tests set.
type PodConfig struct {
	Metadata     PodMetadata       `json:"metadata"`
	Hostname     string            `json:"hostname,omitempty"`
	LogDirectory string            `json:"log_directory,omitempty"`
	PortMappings []PortMapping     `json:"port_mappings,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Linux        PodLinux          `json:"linux"`
}

// PodMetadata names a pod.
type PodMetadata struct {
	Name      string `json:"name"`
	UID       string `json:"uid"`
	Namespace string `json:"namespace"`
	Attempt   uint32 `json:"attempt"`
}

// PortMapping is a container port the pod declares (TCP).
type PortMapping struct {
	ContainerPort int32 `json:"container_port"`
	HostPort      int32 `json:"host_port,omitempty"`
}

// PodLinux is the pod's cgroup and security context.
type PodLinux struct {
	CgroupParent    string             `json:"cgroup_parent,omitempty"`
	SecurityContext PodSecurityContext `json:"security_context"`
}

// PodSecurityContext is the sandbox's: which namespaces it makes.
type PodSecurityContext struct {
	NamespaceOptions NamespaceOptions `json:"namespace_options"`
	Privileged       bool             `json:"privileged,omitempty"`
}

// NamespaceOptions say, per namespace, whose it is (NamespacePod ...).
type NamespaceOptions struct {
	Network int32 `json:"network"`
	PID     int32 `json:"pid"`
	IPC     int32 `json:"ipc"`
}

// ContainerConfig is CRI's ContainerConfig as crictl reads it.
type ContainerConfig struct {
	Metadata    ContainerMetadata `json:"metadata"`
	Image       ImageSpec         `json:"image"`
	Command     []string          `json:"command,omitempty"`
	Args        []string          `json:"args,omitempty"`
	Envs        []KeyValue        `json:"envs,omitempty"`
	Mounts      []Mount           `json:"mounts,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	LogPath     string            `json:"log_path,omitempty"`
	Linux       ContainerLinux    `json:"linux"`
}

// ContainerMetadata names a container in its pod.
type ContainerMetadata struct {
	Name    string `json:"name"`
	Attempt uint32 `json:"attempt"`
}

// ImageSpec is an image reference.
type ImageSpec struct {
	Image string `json:"image"`
}

// KeyValue is an environment variable.
type KeyValue struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Mount is a host path mounted into a container.
type Mount struct {
	ContainerPath string `json:"container_path"`
	HostPath      string `json:"host_path"`
	Readonly      bool   `json:"readonly,omitempty"`
}

// ContainerLinux is the container's security context and cgroup
// settings.
type ContainerLinux struct {
	Resources       *ContainerResources       `json:"resources,omitempty"`
	SecurityContext *ContainerSecurityContext `json:"security_context,omitempty"`
}

// ContainerResources are CRI's LinuxContainerResources: CFS period and
// quota (µs), cpu shares, the memory limit.
type ContainerResources struct {
	CPUPeriod          int64 `json:"cpu_period,omitempty"`
	CPUQuota           int64 `json:"cpu_quota,omitempty"`
	CPUShares          int64 `json:"cpu_shares,omitempty"`
	MemoryLimitInBytes int64 `json:"memory_limit_in_bytes,omitempty"`
}

// ContainerSecurityContext is CRI's LinuxContainerSecurityContext.
type ContainerSecurityContext struct {
	Capabilities     *Capabilities    `json:"capabilities,omitempty"`
	Privileged       bool             `json:"privileged,omitempty"`
	NamespaceOptions NamespaceOptions `json:"namespace_options"`
	RunAsUser        *Int64Value      `json:"run_as_user,omitempty"`
	ReadonlyRootfs   bool             `json:"readonly_rootfs,omitempty"`
	NoNewPrivs       bool             `json:"no_new_privs,omitempty"`
	Seccomp          *SecurityProfile `json:"seccomp,omitempty"`
}

// Capabilities are added and dropped, by name without CAP_ ("ALL").
type Capabilities struct {
	Add  []string `json:"add_capabilities,omitempty"`
	Drop []string `json:"drop_capabilities,omitempty"`
}

// Int64Value is an optional integer.
type Int64Value struct {
	Value int64 `json:"value"`
}

// SecurityProfile is a seccomp profile: 0 RuntimeDefault, 1 Unconfined,
// 2 Localhost.
type SecurityProfile struct {
	ProfileType int32 `json:"profile_type"`
}

// NewUID is a random pod uid, as the API server makes them.
func NewUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// NewPod is the sandbox config a kubelet with the cgroupfs driver sends
// for a best-effort pod: a new uid, the pod's cgroup under
// /kubepods/besteffort, its labels, and a pid namespace per container.
func NewPod(name, namespace string) PodConfig {
	uid := NewUID()
	return PodConfig{
		Metadata: PodMetadata{Name: name, Namespace: namespace, UID: uid},
		Hostname: name,
		Labels: map[string]string{
			"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace, "io.kubernetes.pod.uid": uid,
		},
		Linux: PodLinux{
			CgroupParent:    "/kubepods/besteffort/pod" + uid,
			SecurityContext: PodSecurityContext{NamespaceOptions: NamespaceOptions{PID: NamespaceContainer}},
		},
	}
}

// NewContainer is a container of the busybox image running command.
func NewContainer(name string, command ...string) ContainerConfig {
	return ContainerConfig{Metadata: ContainerMetadata{Name: name}, Image: ImageSpec{Image: ContainerdBusybox}, Command: command}
}

// CRI is a containerd of the tests' own serving CRI, with the pause and
// busybox images imported and a pod network: a bridge on this host only.
type CRI struct {
	// Dir holds its configuration, root, state, socket and CNI
	// configuration, and the pods' logs unless LogRoot says otherwise.
	Dir    string
	Socket string
	// LogRoot is where pods' log directories go (a kubelet's is
	// /var/log/pods).
	LogRoot string
	Bridge  string
	Subnet  *net.IPNet

	crictl string
	config string // crictl's
	daemon *exec.Cmd
	done   chan struct{}
	log    string
	pods   []*Pod
	// release gives up the claim on Subnet.
	release func()
}

// Crictl is the crictl the tests drive CRI with: the release
// CrictlVersion, in the module's bin/ (make test-deps installs it).
func Crictl(t testing.TB) string {
	t.Helper()
	path := filepath.Join(ModuleRoot(t), "bin", "crictl")
	out, err := exec.Command(path, "--version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "crictl version "+CrictlVersion {
		t.Fatalf("crictl %s is needed in %s (make test-deps installs it): %q %v", CrictlVersion, path, strings.TrimSpace(string(out)), err)
	}
	return path
}

// ModuleRoot is the directory of nstrace's go.mod, above the test's.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module github.com/nstrace/nstrace\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("not inside nstrace's module")
		}
		dir = parent
	}
}

// StartCRI starts a containerd serving CRI for t, on its own root, state,
// socket and configuration, imports the pause and busybox images into its
// k8s.io namespace, and stops it when t ends, with every pod it ran and
// what they left (the bridge, the pods' cgroups, mounts).
func StartCRI(t testing.TB) *CRI {
	t.Helper()
	NeedTools(t, "containerd", "ctr", "runc", "ip")
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Fatal("the CNI plugins are needed in /usr/lib/cni: apt-get install containernetworking-plugins (make test installs it)")
	}
	crictl := Crictl(t)
	SharedNetnsDir(t)
	dir, err := os.MkdirTemp("/run", "nstrace-cri-")
	if err != nil {
		t.Fatal(err)
	}
	c := &CRI{Dir: dir, Socket: filepath.Join(dir, "containerd.sock"), LogRoot: filepath.Join(dir, "pods"),
		Bridge: fmt.Sprintf("nstcri%04x", mrand.IntN(1<<16)),
		crictl: crictl, config: filepath.Join(dir, "crictl.yaml"), done: make(chan struct{}), log: filepath.Join(dir, "containerd.log")}
	t.Cleanup(func() { c.stop(t) })
	c.Subnet, c.release = claimSubnet(t)
	c.configure(t)
	c.start(t)
	c.importImage(t, pauseArchive(t))
	c.importImage(t, BusyboxOCIArchive(t, ContainerdBusybox))
	return c
}

// configure writes containerd's, CNI's and crictl's configuration.
func (c *CRI) configure(t testing.TB) {
	t.Helper()
	gw := append(net.IP{}, c.Subnet.IP...)
	gw[3] = 1
	// containerd adds the loopback network itself (the loopback plugin);
	// the pods' eth0 is on a bridge of ours, with no route beyond the
	// host and no masquerading.
	cni, _ := json.MarshalIndent(map[string]any{
		"cniVersion": "0.4.0", "name": "nstrace-test",
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": c.Bridge, "isGateway": true, "ipMasq": false,
			"ipam": map[string]any{"type": "host-local", "dataDir": filepath.Join(c.Dir, "ipam"),
				"ranges": []any{[]any{map[string]any{"subnet": c.Subnet.String(), "gateway": gw.String()}}}},
		}},
	}, "", "  ")
	oom := ""
	if !hasCapability(unix.CAP_SYS_RESOURCE) {
		// A kubelet asks for oom_score_adj -998 for a sandbox; without
		// CAP_SYS_RESOURCE the kernel refuses lowering it, and runc fails
		// ("can't get final child's PID from pipe: EOF").
		oom = "  restrict_oom_score_adj = true\n"
	}
	toml := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = "%[3]s.ttrpc"
[debug]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
%[7]s  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[8]q
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
`, filepath.Join(c.Dir, "root"), filepath.Join(c.Dir, "state"), c.Socket, filepath.Join(c.Dir, "debug.sock"),
		filepath.Join(c.Dir, "opt"), PauseImage, oom, filepath.Join(c.Dir, "net.d"))
	crictl := fmt.Sprintf("runtime-endpoint: unix://%[1]s\nimage-endpoint: unix://%[1]s\ntimeout: 60\n", c.Socket)
	for path, b := range map[string][]byte{
		filepath.Join(c.Dir, "net.d", "10-nstrace-test.conflist"): cni,
		filepath.Join(c.Dir, "containerd.toml"):                   []byte(toml),
		c.config:                                                  []byte(crictl),
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// hasCapability reports whether this process has capability n in effect.
func hasCapability(n int) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<n) != 0
		}
	}
	return false
}

// start runs containerd and waits until its CRI answers.
func (c *CRI) start(t testing.TB) {
	t.Helper()
	logf, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	c.daemon = exec.Command("containerd", "--config", filepath.Join(c.Dir, "containerd.toml"))
	c.daemon.Stdout, c.daemon.Stderr = logf, logf
	c.daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.daemon.Start(); err != nil {
		t.Fatalf("starting containerd: %v", err)
	}
	go func() { _ = c.daemon.Wait(); close(c.done) }()
	if !Eventually(60*time.Second, 100*time.Millisecond, func() bool {
		_, err = c.CrictlErr("version")
		return err == nil || exited(c.done)
	}) {
		t.Fatalf("containerd's CRI does not answer after 60s: %s", c.logTail())
	}
	if err != nil {
		t.Fatalf("containerd exited: %s", c.logTail())
	}
}

// exited reports whether done is closed.
func exited(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

func (c *CRI) logTail() string {
	b, _ := os.ReadFile(c.log)
	return tail(string(b), 20)
}

// pauseArchive builds the pause program, static, into an image of its
// own named PauseImage.
func pauseArchive(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "pause")
	build := exec.Command(goTool(), "build", "-o", bin, "github.com/nstrace/nstrace/internal/testutil/pause")
	build.Dir = ModuleRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the pause program: %v: %s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "pause", Mode: 0o755, Size: int64(len(b)), ModTime: time.Unix(0, 0)})
	_, _ = tw.Write(b)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return OCIArchive(t, PauseImage, layer.Bytes(), map[string]any{"Entrypoint": []string{"/pause"}})
}

// goTool is the go command: go test puts its own first in PATH.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// importImage imports an image archive (OCI layout or docker save) into
// the k8s.io namespace, where CRI finds its images.
func (c *CRI) importImage(t testing.TB, archive string) {
	t.Helper()
	if out, err := RunErr("ctr", "--address", c.Socket, "--namespace", "k8s.io", "images", "import", archive); err != nil {
		t.Fatalf("ctr images import %s: %v (%s)", archive, err, out)
	}
}

// ImportImage imports an image archive for the pods to run.
func (c *CRI) ImportImage(t testing.TB, archive string) { t.Helper(); c.importImage(t, archive) }

// CrictlErr runs crictl against this containerd.
func (c *CRI) CrictlErr(args ...string) (string, error) {
	return RunErr(c.crictl, append([]string{"--config", c.config}, args...)...)
}

// Crictl runs crictl against this containerd and fails t if it fails.
func (c *CRI) Crictl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.CrictlErr(args...)
	if err != nil {
		t.Fatalf("crictl %s: %v; containerd's log: %s", strings.Join(args, " "), err, c.logTail())
	}
	return out
}

// Pod is a pod sandbox run through CRI.
type Pod struct {
	ID     string // the sandbox's id
	Config PodConfig
	cri    *CRI
	file   string // the config, as crictl reads it
	gone   bool
}

// RunPod runs a pod sandbox (crictl runp), removed when t ends. Its log
// directory is LogRoot/NAMESPACE_NAME_UID, as a kubelet names it, unless
// cfg says.
func (c *CRI) RunPod(t testing.TB, cfg PodConfig) *Pod {
	t.Helper()
	m := cfg.Metadata
	if cfg.LogDirectory == "" {
		cfg.LogDirectory = filepath.Join(c.LogRoot, m.Namespace+"_"+m.Name+"_"+m.UID)
	}
	p := &Pod{Config: cfg, cri: c, file: filepath.Join(c.Dir, "pod-"+m.UID+".json")}
	writeJSON(t, p.file, cfg)
	c.pods = append(c.pods, p)
	t.Cleanup(func() { p.Remove(t) })
	var err error
	withCgroupParents(t, func(made map[string]bool) {
		var missing []string
		for _, d := range cgroupParentsOf(cfg.Linux.CgroupParent) {
			if _, err := os.Stat(d); os.IsNotExist(err) {
				missing = append(missing, d)
			}
		}
		p.ID, err = c.CrictlErr("runp", p.file)
		for _, d := range missing {
			if _, err := os.Stat(d); err == nil {
				made[d] = true
			}
		}
	})
	if err != nil {
		t.Fatalf("crictl runp: %v; containerd's log: %s", err, c.logTail())
	}
	return p
}

// Start creates and starts a container in the pod (crictl create,
// start), as a kubelet does: its log at NAME/0.log in the pod's log
// directory, its labels, and the pod's namespace options unless cfg sets
// a security context. It returns the container's id.
func (p *Pod) Start(t testing.TB, cfg ContainerConfig) string {
	t.Helper()
	if cfg.LogPath == "" {
		cfg.LogPath = cfg.Metadata.Name + "/0.log"
	}
	if cfg.Linux.SecurityContext == nil {
		cfg.Linux.SecurityContext = &ContainerSecurityContext{NamespaceOptions: p.Config.Linux.SecurityContext.NamespaceOptions}
	}
	labels := map[string]string{"io.kubernetes.container.name": cfg.Metadata.Name}
	for _, k := range []string{"io.kubernetes.pod.name", "io.kubernetes.pod.namespace", "io.kubernetes.pod.uid"} {
		labels[k] = p.Config.Labels[k]
	}
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	cfg.Labels = labels
	file := filepath.Join(p.cri.Dir, fmt.Sprintf("container-%s-%s.json", p.Config.Metadata.UID, cfg.Metadata.Name))
	writeJSON(t, file, cfg)
	id := p.cri.Crictl(t, "create", p.ID, file, p.file)
	p.cri.Crictl(t, "start", id)
	return id
}

// LogPath is where CRI writes a container's output: the pod's log
// directory and the container's log_path.
func (p *Pod) LogPath(name string) string {
	return filepath.Join(p.Config.LogDirectory, name, "0.log")
}

// Remove stops and removes the pod and its containers (crictl stopp,
// rmp), and the pod's cgroup the runtime leaves behind (a kubelet
// removes it).
func (p *Pod) Remove(t testing.TB) {
	t.Helper()
	if p.gone || p.ID == "" {
		return
	}
	p.gone = true
	if _, err := p.cri.CrictlErr("stopp", p.ID); err != nil {
		t.Errorf("crictl stopp %s: %v", p.ID, err)
	}
	if _, err := p.cri.CrictlErr("rmp", "-f", p.ID); err != nil {
		t.Errorf("crictl rmp %s: %v", p.ID, err)
	}
	removeCgroup(p.Config.Linux.CgroupParent)
}

// ExecSync runs argv in a container to its end (crictl exec --sync) and
// returns its output.
func (c *CRI) ExecSync(t testing.TB, id string, argv ...string) string {
	t.Helper()
	return c.Crictl(t, append([]string{"exec", "--sync", id}, argv...)...)
}

// PodStatus is what crictl inspectp says of a pod.
type PodStatus struct {
	Status struct {
		ID       string      `json:"id"`
		Metadata PodMetadata `json:"metadata"`
		State    string      `json:"state"`
		Network  struct {
			IP string `json:"ip"`
		} `json:"network"`
	} `json:"status"`
	Info struct {
		PID int `json:"pid"` // the sandbox's process, on the host
	} `json:"info"`
}

// InspectPod asks CRI about a pod.
func (c *CRI) InspectPod(t testing.TB, id string) PodStatus {
	t.Helper()
	var s PodStatus
	if err := json.Unmarshal([]byte(c.Crictl(t, "inspectp", "-o", "json", id)), &s); err != nil {
		t.Fatalf("crictl inspectp %s: %v", id, err)
	}
	return s
}

// ContainerStatus is what crictl inspect says of a container.
type ContainerStatus struct {
	Status struct {
		ID       string            `json:"id"`
		Metadata ContainerMetadata `json:"metadata"`
		State    string            `json:"state"`
		ExitCode int               `json:"exitCode"`
		LogPath  string            `json:"logPath"`
	} `json:"status"`
	Info struct {
		PID       int    `json:"pid"` // its init, on the host
		SandboxID string `json:"sandboxID"`
	} `json:"info"`
}

// Inspect asks CRI about a container.
func (c *CRI) Inspect(t testing.TB, id string) ContainerStatus {
	t.Helper()
	var s ContainerStatus
	if err := json.Unmarshal([]byte(c.Crictl(t, "inspect", "-o", "json", id)), &s); err != nil {
		t.Fatalf("crictl inspect %s: %v", id, err)
	}
	return s
}

// stop removes what pods are left, stops containerd and its shims, and
// removes what they leave: mounts, the bridge, the pods' cgroups, Dir.
func (c *CRI) stop(t testing.TB) {
	for i := len(c.pods) - 1; i >= 0; i-- {
		c.pods[i].Remove(t)
	}
	if c.daemon != nil && c.daemon.Process != nil {
		stopDaemon(c.daemon.Process, c.done)
	}
	// A shim outlives its containerd while its containers run; ours are
	// those that name our socket.
	for _, pid := range shimsOf(c.Socket) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	unmountUnder(c.Dir)
	_ = exec.Command("ip", "link", "del", c.Bridge).Run()
	removeCgroupParents(t)
	if c.release != nil {
		c.release()
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		t.Errorf("removing %s: %v", c.Dir, err)
	}
}

// shimsOf lists the containerd shims started for the containerd at
// socket.
func shimsOf(socket string) []int {
	var pids []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			for i := range len(args) - 1 {
				if args[i] == "-address" && args[i+1] == socket {
					pids = append(pids, pid)
				}
			}
		}
	}
	return pids
}

// unmountUnder unmounts everything mounted below dir, deepest first.
func unmountUnder(dir string) {
	b, _ := os.ReadFile("/proc/self/mounts")
	var mounts []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			mounts = append(mounts, f[1])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = unix.Unmount(mounts[i], unix.MNT_DETACH)
	}
}

// cgroupHierarchies are the directories of the cgroup hierarchies
// mounted: v1 controllers' and v2's, under /sys/fs/cgroup or at it on a
// host of cgroup v2 alone. A pod's cgroup is made in each.
func cgroupHierarchies() []string {
	b, _ := os.ReadFile("/proc/self/mounts")
	var dirs []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 2 && (f[2] == "cgroup" || f[2] == "cgroup2") {
			dirs = append(dirs, f[1])
		}
	}
	return dirs
}

// removeCgroup removes a pod's cgroup from every hierarchy, once the
// runtime has removed its containers' cgroups below it.
func removeCgroup(path string) {
	if path == "" {
		return
	}
	for _, h := range cgroupHierarchies() {
		removeCgroupDir(filepath.Join(h, path))
	}
}

// removeCgroupDir removes a cgroup's directory, trying for 5 seconds:
// the kernel takes a moment to let go of a cgroup whose last process
// has exited.
func removeCgroupDir(dir string) {
	Eventually(5*time.Second, 20*time.Millisecond, func() bool {
		err := os.Remove(dir)
		return err == nil || os.IsNotExist(err)
	})
}

// cgroupParents records the directories above pods' cgroups
// (/kubepods, /kubepods/besteffort ...) that the runtime made for the
// tests' pods, in every hierarchy, one a line. It is shared by every
// process's CRIs, and whichever stops last, its pods gone, removes
// them. Its lock is held while a pod is run and while they are removed,
// so that none is removed under a pod being made.
const cgroupParents = subnetClaims + "/cgroup-parents"

// withCgroupParents runs f with cgroupParents locked and read, and
// writes back what f leaves.
func withCgroupParents(t testing.TB, f func(made map[string]bool)) {
	t.Helper()
	if err := os.MkdirAll(subnetClaims, 0o755); err != nil {
		t.Fatal(err)
	}
	file, err := os.OpenFile(cgroupParents, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if err := unix.Flock(int(file.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(file)
	if err != nil {
		t.Fatal(err)
	}
	made := map[string]bool{}
	for _, d := range strings.Fields(string(b)) {
		made[d] = true
	}
	f(made)
	list := slices.Sorted(maps.Keys(made))
	if err := file.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if _, err := file.WriteAt([]byte(strings.Join(list, "\n")+"\n"), 0); err != nil {
		t.Fatal(err)
	}
}

// cgroupParentsOf lists, in every hierarchy, the directories above a
// pod's cgroup path but the hierarchy's root.
func cgroupParentsOf(path string) []string {
	var dirs []string
	for _, h := range cgroupHierarchies() {
		for p := filepath.Dir(path); p != "/" && p != "."; p = filepath.Dir(p) {
			dirs = append(dirs, filepath.Join(h, p))
		}
	}
	return dirs
}

// removeCgroupParents removes the empty directories cgroupParents
// records, deepest first; one still holding a cgroup (another process's
// pod) stays recorded.
func removeCgroupParents(t testing.TB) {
	t.Helper()
	withCgroupParents(t, func(made map[string]bool) {
		dirs := slices.Collect(maps.Keys(made))
		slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
		for _, d := range dirs {
			if err := os.Remove(d); err == nil || os.IsNotExist(err) {
				delete(made, d)
			}
		}
	})
}

// subnetClaims is where StartCRI claims the /24 of its pods' bridge, a
// locked file for each: the tests of several packages start CRIs at the
// same moment, and a bridge appears only with the first pod.
const subnetClaims = "/run/nstrace-cri"

// claimSubnet picks a /24 in 10.213.0.0/16 that no interface's address,
// no route and no other CRI of the tests (of any process) has, and
// claims it until release. A claim is a lock, so a test killed midway
// holds none.
func claimSubnet(t testing.TB) (_ *net.IPNet, release func()) {
	t.Helper()
	if err := os.MkdirAll(subnetClaims, 0o755); err != nil {
		t.Fatal(err)
	}
	var taken []*net.IPNet
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			taken = append(taken, n)
		}
	}
	taken = append(taken, routes()...)
	for range 100 {
		n := &net.IPNet{IP: net.IPv4(10, 213, byte(mrand.IntN(256)), 0).To4(), Mask: net.CIDRMask(24, 32)}
		free := true
		for _, o := range taken {
			if o.Contains(n.IP) || n.Contains(o.IP) {
				free = false
				break
			}
		}
		if !free {
			continue
		}
		if release, ok := claim(filepath.Join(subnetClaims, n.IP.String())); ok {
			return n, release
		}
	}
	t.Fatal("no free /24 in 10.213.0.0/16 for the pods' bridge")
	return nil, nil
}

// claim locks the file at path, made if need be, unless another holds
// it; release removes it. A file removed by its holder between another's
// open and lock is not the one at path any more: that lock is no claim.
func claim(path string) (release func(), ok bool) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false
	}
	var held, now unix.Stat_t
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil ||
		unix.Fstat(int(f.Fd()), &held) != nil || unix.Stat(path, &now) != nil || held.Ino != now.Ino {
		f.Close()
		return nil, false
	}
	return func() { os.Remove(path); f.Close() }, true
}

// routes are the IPv4 routes' destinations, from /proc/net/route, but
// the default route.
func routes() []*net.IPNet {
	b, _ := os.ReadFile("/proc/net/route")
	var out []*net.IPNet
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 8 {
			continue
		}
		dst, err1 := strconv.ParseUint(f[1], 16, 32)
		mask, err2 := strconv.ParseUint(f[7], 16, 32)
		if err1 != nil || err2 != nil || mask == 0 {
			continue
		}
		le := func(v uint64) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }
		out = append(out, &net.IPNet{IP: net.IP(le(dst)), Mask: net.IPMask(le(mask))})
	}
	return out
}

func writeJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
