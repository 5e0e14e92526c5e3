// SPDX-License-Identifier: Apache-2.0

package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"
)

// nstrace's DaemonSet, run as a kubelet runs its pod: the pod template of
// deploy/kubernetes/nstrace.yaml turned into CRI's configs, field by
// field, the way the kubelet turns a pod spec into them, and run through
// CRI (StartCRI) from the image `make image` builds.

// Manifest is the DaemonSet's manifest, from the module's root.
const Manifest = "deploy/kubernetes/nstrace.yaml"

// daemonSet is the part of a DaemonSet manifest its pods are made of.
// Decoding is strict: a field the manifest gains that is not here fails
// the translation, so the pod run is always the manifest's.
type daemonSet struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		Selector       any `yaml:"selector"`       // the API server's
		UpdateStrategy any `yaml:"updateStrategy"` // the controller's
		Template       struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	// The API server's and the scheduler's, not CRI's.
	ServiceAccountName           string `yaml:"serviceAccountName"`
	AutomountServiceAccountToken *bool  `yaml:"automountServiceAccountToken"`
	Tolerations                  any    `yaml:"tolerations"`

	HostPID                       bool           `yaml:"hostPID"`
	HostNetwork                   bool           `yaml:"hostNetwork"`
	HostIPC                       bool           `yaml:"hostIPC"`
	ShareProcessNamespace         bool           `yaml:"shareProcessNamespace"`
	TerminationGracePeriodSeconds int            `yaml:"terminationGracePeriodSeconds"`
	Containers                    []podContainer `yaml:"containers"`
	Volumes                       []struct {
		Name     string `yaml:"name"`
		HostPath *struct {
			Path string `yaml:"path"`
			Type string `yaml:"type"`
		} `yaml:"hostPath"`
	} `yaml:"volumes"`
}

type podContainer struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	ImagePullPolicy string   `yaml:"imagePullPolicy"` // the image is imported
	Command         []string `yaml:"command"`
	Args            []string `yaml:"args"`
	Env             []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int32  `yaml:"containerPort"`
		HostPort      int32  `yaml:"hostPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	ReadinessProbe *podProbe `yaml:"readinessProbe"`
	LivenessProbe  *podProbe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		Privileged               bool   `yaml:"privileged"`
		AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool   `yaml:"readOnlyRootFilesystem"`
		RunAsUser                *int64 `yaml:"runAsUser"`
		RunAsNonRoot             *bool  `yaml:"runAsNonRoot"` // the kubelet's check
		Capabilities             struct {
			Add  []string `yaml:"add"`
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
		SeccompProfile *struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type podProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"` // a number or a port's name
	} `yaml:"httpGet"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
}

// DaemonSetSpec is a DaemonSet's pod, as CRI runs it.
type DaemonSetSpec struct {
	Pod       PodConfig
	Container ContainerConfig
	// Readiness is the readiness probe's path and port ("" if none).
	ReadinessPath string
	ReadinessPort int32
	// HostDirs are the hostPath directories of type DirectoryOrCreate:
	// the kubelet makes them if they are missing.
	HostDirs []string
	// GracePeriod is how long the container is given to stop.
	GracePeriod time.Duration
}

// DaemonSetPodSpec translates the DaemonSet in manifest (YAML, several
// documents) into its pod's CRI configs, as the kubelet does with the
// cgroupfs driver: a new uid and a name like the controller's, the QoS
// class's cgroup, the host namespaces asked for, the container's args,
// security context, resources, ports and hostPath mounts.
func DaemonSetPodSpec(manifest []byte) (DaemonSetSpec, error) {
	var ds *daemonSet
	dec := yaml.NewDecoder(bytes.NewReader(manifest))
	for {
		var doc yaml.MapSlice
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return DaemonSetSpec{}, err
		}
		b, _ := yaml.Marshal(doc)
		var kind struct {
			Kind string `yaml:"kind"`
		}
		if yaml.Unmarshal(b, &kind) != nil || kind.Kind != "DaemonSet" {
			continue
		}
		ds = &daemonSet{}
		if err := yaml.UnmarshalStrict(b, ds); err != nil {
			return DaemonSetSpec{}, fmt.Errorf("the DaemonSet: %w", err)
		}
	}
	if ds == nil {
		return DaemonSetSpec{}, errors.New("no DaemonSet in the manifest")
	}
	spec := ds.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		return DaemonSetSpec{}, fmt.Errorf("%d containers, want one", len(spec.Containers))
	}
	k := spec.Containers[0]

	name := ds.Metadata.Name + "-" + suffix()
	pod := NewPod(name, ds.Metadata.Namespace)
	for key, v := range ds.Spec.Template.Metadata.Labels {
		pod.Labels[key] = v
	}
	pod.Annotations = ds.Spec.Template.Metadata.Annotations
	ns := &pod.Linux.SecurityContext.NamespaceOptions
	if spec.HostPID {
		ns.PID = NamespaceNode
	} else if spec.ShareProcessNamespace {
		ns.PID = NamespacePod
	}
	if spec.HostNetwork {
		ns.Network = NamespaceNode
	}
	if spec.HostIPC {
		ns.IPC = NamespaceNode
	}
	res, qos, err := resources(k.Resources.Requests, k.Resources.Limits)
	if err != nil {
		return DaemonSetSpec{}, err
	}
	pod.Linux.CgroupParent = "/kubepods/" + qos + "pod" + pod.Metadata.UID

	c := ContainerConfig{
		Metadata: ContainerMetadata{Name: k.Name}, Image: ImageSpec{Image: k.Image},
		Command: k.Command, Args: k.Args, Annotations: map[string]string{},
	}
	for _, e := range k.Env {
		c.Envs = append(c.Envs, KeyValue{Key: e.Name, Value: e.Value})
	}
	sc := k.SecurityContext
	csc := &ContainerSecurityContext{
		Privileged: sc.Privileged, NamespaceOptions: *ns, ReadonlyRootfs: sc.ReadOnlyRootFilesystem,
		NoNewPrivs:   sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation,
		Capabilities: &Capabilities{Add: sc.Capabilities.Add, Drop: sc.Capabilities.Drop},
	}
	if sc.RunAsUser != nil {
		csc.RunAsUser = &Int64Value{Value: *sc.RunAsUser}
	}
	if p := sc.SeccompProfile; p != nil {
		types := map[string]int32{"RuntimeDefault": 0, "Unconfined": 1}
		t, ok := types[p.Type]
		if !ok {
			return DaemonSetSpec{}, fmt.Errorf("seccomp profile %q", p.Type)
		}
		csc.Seccomp = &SecurityProfile{ProfileType: t}
	}
	c.Linux = ContainerLinux{SecurityContext: csc, Resources: res}

	out := DaemonSetSpec{GracePeriod: time.Duration(spec.TerminationGracePeriodSeconds) * time.Second}
	ports := map[string]int32{}
	for _, p := range k.Ports {
		if p.Protocol != "" && p.Protocol != "TCP" {
			return DaemonSetSpec{}, fmt.Errorf("port %s: protocol %s", p.Name, p.Protocol)
		}
		ports[p.Name] = p.ContainerPort
		pod.PortMappings = append(pod.PortMappings, PortMapping{ContainerPort: p.ContainerPort, HostPort: p.HostPort})
	}
	if r := k.ReadinessProbe; r != nil && r.HTTPGet != nil {
		out.ReadinessPath = r.HTTPGet.Path
		switch p := r.HTTPGet.Port.(type) {
		case int:
			out.ReadinessPort = int32(p)
		case string:
			out.ReadinessPort = ports[p]
		}
		if out.ReadinessPort == 0 {
			return DaemonSetSpec{}, fmt.Errorf("readiness probe port %v", r.HTTPGet.Port)
		}
	}

	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath == nil {
			return DaemonSetSpec{}, fmt.Errorf("volume %s is not a hostPath", v.Name)
		}
		switch v.HostPath.Type {
		case "DirectoryOrCreate":
			out.HostDirs = append(out.HostDirs, v.HostPath.Path)
		case "Directory", "":
		default:
			return DaemonSetSpec{}, fmt.Errorf("volume %s: hostPath type %s", v.Name, v.HostPath.Type)
		}
		hostPaths[v.Name] = v.HostPath.Path
	}
	for _, m := range k.VolumeMounts {
		host, ok := hostPaths[m.Name]
		if !ok {
			return DaemonSetSpec{}, fmt.Errorf("volumeMount %s: no such volume", m.Name)
		}
		c.Mounts = append(c.Mounts, Mount{ContainerPath: m.MountPath, HostPath: host, Readonly: m.ReadOnly})
	}
	out.Pod, out.Container = pod, c
	return out, nil
}

// suffix is five characters as a DaemonSet controller names its pods.
func suffix() string {
	const letters = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, 5)
	for i := range b {
		b[i] = letters[mrand.IntN(len(letters))]
	}
	return string(b)
}

// resources turns requests and limits into the container's cgroup
// settings as the kubelet does (cpu shares from the request, a CFS quota
// from the limit, the memory limit) and names the pod's QoS class's
// cgroup directory: "" (guaranteed), "burstable/" or "besteffort/".
func resources(requests, limits map[string]string) (*ContainerResources, string, error) {
	cpu := func(q string) (int64, error) { // millicores
		if m, ok := strings.CutSuffix(q, "m"); ok {
			return strconv.ParseInt(m, 10, 64)
		}
		n, err := strconv.ParseFloat(q, 64)
		return int64(n * 1000), err
	}
	mem := func(q string) (int64, error) {
		for i, s := range []string{"Ki", "Mi", "Gi"} {
			if n, ok := strings.CutSuffix(q, s); ok {
				v, err := strconv.ParseInt(n, 10, 64)
				return v << (10 * (i + 1)), err
			}
		}
		return strconv.ParseInt(q, 10, 64)
	}
	r := &ContainerResources{CPUPeriod: 100_000}
	for key, q := range requests {
		switch key {
		case "cpu":
			m, err := cpu(q)
			if err != nil {
				return nil, "", fmt.Errorf("cpu request %q", q)
			}
			r.CPUShares = max(m*1024/1000, 2)
		case "memory":
			if _, err := mem(q); err != nil {
				return nil, "", fmt.Errorf("memory request %q", q)
			}
		default:
			return nil, "", fmt.Errorf("request for %s", key)
		}
	}
	for key, q := range limits {
		switch key {
		case "cpu":
			m, err := cpu(q)
			if err != nil {
				return nil, "", fmt.Errorf("cpu limit %q", q)
			}
			r.CPUQuota = m * r.CPUPeriod / 1000
		case "memory":
			b, err := mem(q)
			if err != nil {
				return nil, "", fmt.Errorf("memory limit %q", q)
			}
			r.MemoryLimitInBytes = b
		default:
			return nil, "", fmt.Errorf("limit for %s", key)
		}
	}
	qos := "burstable/"
	switch {
	case len(requests) == 0 && len(limits) == 0:
		qos = "besteffort/"
	case len(limits) == 2 && (len(requests) == 0 || requests["cpu"] == limits["cpu"] && requests["memory"] == limits["memory"]):
		qos = ""
	}
	if r.CPUShares == 0 {
		r.CPUShares = 2
	}
	return r, qos, nil
}

// NstraceImage builds nstrace's image with `make image`, once for the
// test binary (a build takes a minute), in a Docker daemon of its own
// that is stopped after (no other user's images are touched), and
// returns the archive's path and the image's name. RemoveNstraceImage
// removes the archive.
func NstraceImage(t testing.TB) (archive, image string) {
	t.Helper()
	NeedTools(t, "make", "dockerd", "docker", "containerd")
	root := ModuleRoot(t)
	built.once.Do(func() { built.build(root) })
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.archive, built.image
}

// RemoveNstraceImage removes the image NstraceImage built, if it did:
// for a test binary's TestMain, once its tests are done.
func RemoveNstraceImage() {
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
}

// builtImage is an image make image built, or why it could not.
type builtImage struct {
	once                sync.Once
	dir, archive, image string
	err                 error
}

// built is the test binary's image.
var built builtImage

func (b *builtImage) build(root string) {
	if b.dir, b.err = os.MkdirTemp("", "nstrace-image-"); b.err != nil {
		return
	}
	b.image = fmt.Sprintf("nstrace:test-%d", mrand.IntN(1_000_000))
	b.archive = filepath.Join(b.dir, "image.tar")
	mk := exec.Command("make", "-C", root, "image", "IMAGE="+b.image, "IMAGE_TAR="+b.archive,
		"BIN="+filepath.Join(b.dir, "nstrace"), "IMAGE_DIR="+filepath.Join(b.dir, "context"), "WITH_DOCKER=deploy/image/with-docker --private")
	if out, err := mk.CombinedOutput(); err != nil {
		b.err = fmt.Errorf("make image: %v: %s", err, out)
	}
}

// DaemonSetPod is nstrace's DaemonSet pod, running.
type DaemonSetPod struct {
	Pod         *Pod
	ContainerID string
	Spec        DaemonSetSpec
	// LogPath is the container's CRI log file, where the kubelet's
	// layout puts it: /var/log/pods/NAMESPACE_POD_UID/CONTAINER/0.log.
	LogPath string
	// Ready is the readiness probe's URL, through the pod's address.
	Ready string
}

// PodLogRoot is where a kubelet keeps pods' logs.
const PodLogRoot = "/var/log/pods"

// RunDaemonSet imports nstrace's image (NstraceImage) into c, runs the
// DaemonSet's pod from the manifest, and returns once its readiness
// probe answers 200, as the kubelet would then mark it ready.
// The pod and its logs are removed when t ends.
func RunDaemonSet(t testing.TB, c *CRI) *DaemonSetPod {
	t.Helper()
	archive, _ := NstraceImage(t)
	c.ImportImage(t, archive)
	b, err := os.ReadFile(filepath.Join(ModuleRoot(t), Manifest))
	if err != nil {
		t.Fatal(err)
	}
	spec, err := DaemonSetPodSpec(b)
	if err != nil {
		t.Fatalf("%s: %v", Manifest, err)
	}
	for _, d := range spec.HostDirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := spec.Pod.Metadata
	spec.Pod.LogDirectory = filepath.Join(PodLogRoot, m.Namespace+"_"+m.Name+"_"+m.UID)
	t.Cleanup(func() { _ = os.RemoveAll(spec.Pod.LogDirectory) })
	p := c.RunPod(t, spec.Pod)
	id := p.Start(t, spec.Container)
	d := &DaemonSetPod{Pod: p, ContainerID: id, Spec: spec, LogPath: p.LogPath(spec.Container.Metadata.Name)}
	t.Cleanup(func() { d.Stop(t) })
	if spec.ReadinessPath == "" {
		t.Fatalf("%s: no readiness probe", Manifest)
	}
	d.Ready = fmt.Sprintf("http://%s:%d%s", c.InspectPod(t, p.ID).Status.Network.IP, spec.ReadinessPort, spec.ReadinessPath)
	client := http.Client{Timeout: 2 * time.Second}
	state := ""
	if !Eventually(60*time.Second, 100*time.Millisecond, func() bool {
		var resp *http.Response
		if resp, err = client.Get(d.Ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
			err = errors.New(resp.Status)
		}
		state = c.Inspect(t, id).Status.State
		return state != "CONTAINER_RUNNING"
	}) || err != nil {
		log, _ := os.ReadFile(d.LogPath)
		t.Fatalf("the DaemonSet's pod is %s, not ready after 60s (%s: %v): its log: %s", state, d.Ready, err, tail(string(log), 20))
	}
	return d
}

// Stop stops the container as the kubelet does, SIGTERM and the grace
// period, and returns its exit code.
func (d *DaemonSetPod) Stop(t testing.TB) int {
	t.Helper()
	c := d.Pod.cri
	if s := c.Inspect(t, d.ContainerID); s.Status.State == "CONTAINER_RUNNING" {
		c.Crictl(t, "stop", "--timeout", strconv.Itoa(int(d.Spec.GracePeriod/time.Second)), d.ContainerID)
	}
	return c.Inspect(t, d.ContainerID).Status.ExitCode
}

// CRILogLine is a line of a CRI log file (the kubelet's format):
// TIMESTAMP STREAM TAG MESSAGE, the tag F for a whole line, P for part of
// a longer one (containerd cuts lines at its max_container_log_line_size,
// 16 KiB by default).
type CRILogLine struct {
	Time    time.Time // the first part's
	Stream  string    // stdout or stderr
	Message string    // the parts of a stream up to its F line, joined
}

// ReadCRILog reads a CRI log file that its runtime may be writing: a last
// line without its newline is not written yet, and a stream's P parts
// are joined up to its F line (those without one yet are left out). A
// line not in the format is an error.
func ReadCRILog(path string) ([]CRILogLine, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseCRILog(path, string(b))
}

func parseCRILog(path, s string) ([]CRILogLine, error) {
	var out []CRILogLine
	partial := map[string]*CRILogLine{} // by stream
	for i := 0; ; i++ {
		l, rest, whole := strings.Cut(s, "\n")
		if !whole {
			return out, nil
		}
		s = rest
		f := strings.SplitN(l, " ", 4)
		if len(f) != 4 || f[1] != "stdout" && f[1] != "stderr" || f[2] != "F" && f[2] != "P" {
			return nil, fmt.Errorf("%s:%d: not a CRI log line: %q", path, i+1, l)
		}
		ts, err := time.Parse(time.RFC3339Nano, f[0])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		p := partial[f[1]]
		if p == nil {
			p = &CRILogLine{Time: ts, Stream: f[1]}
		}
		p.Message += f[3]
		if f[2] == "P" {
			partial[f[1]] = p
			continue
		}
		delete(partial, f[1])
		out = append(out, *p)
	}
}
