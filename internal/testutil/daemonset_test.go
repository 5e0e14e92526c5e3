// SPDX-License-Identifier: Apache-2.0

package testutil

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// The DaemonSet's pod in CRI's terms is what the manifest says: the host's
// pid namespace, its capabilities, seccomp, read-only root, user, args,
// metrics port and readiness probe, each hostPath volume mounted where it
// says, the burstable QoS class's cgroup, the limits.
func TestDaemonSetPodSpec(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(ModuleRoot(t), Manifest))
	if err != nil {
		t.Fatal(err)
	}
	s, err := DaemonSetPodSpec(b)
	if err != nil {
		t.Fatal(err)
	}
	p, c := s.Pod, s.Container
	if p.Metadata.Namespace != "nstrace" || !strings.HasPrefix(p.Metadata.Name, "nstrace-") || len(p.Metadata.Name) != len("nstrace-")+5 ||
		p.Labels["app.kubernetes.io/name"] != "nstrace" || p.Annotations["prometheus.io/port"] != "9795" {
		t.Errorf("pod %+v labels %v annotations %v", p.Metadata, p.Labels, p.Annotations)
	}
	if p.Linux.CgroupParent != "/kubepods/burstable/pod"+p.Metadata.UID {
		t.Errorf("cgroup parent %s", p.Linux.CgroupParent)
	}
	host := NamespaceOptions{PID: NamespaceNode}
	sc := c.Linux.SecurityContext
	if p.Linux.SecurityContext.NamespaceOptions != host || sc.NamespaceOptions != host {
		t.Errorf("namespaces: pod %+v container %+v, want the host's pid namespace", p.Linux.SecurityContext, sc.NamespaceOptions)
	}
	if c.Image.Image != "nstrace:latest" || strings.Join(c.Args, " ") != "--json --metrics-addr 0.0.0.0:9795" || c.Command != nil {
		t.Errorf("image %s command %q args %q", c.Image.Image, c.Command, c.Args)
	}
	if sc.Privileged || !sc.NoNewPrivs || !sc.ReadonlyRootfs || sc.RunAsUser == nil || sc.RunAsUser.Value != 0 ||
		sc.Seccomp == nil || sc.Seccomp.ProfileType != 1 ||
		!slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) || !slices.Equal(sc.Capabilities.Add, []string{"BPF", "PERFMON", "DAC_READ_SEARCH", "SYS_PTRACE"}) {
		t.Errorf("security context %+v caps %+v", sc, sc.Capabilities)
	}
	if r := c.Linux.Resources; r == nil || r.CPUShares != 51 || r.CPUPeriod != 100_000 || r.CPUQuota != 100_000 || r.MemoryLimitInBytes != 256<<20 {
		t.Errorf("resources %+v", c.Linux.Resources)
	}
	if len(p.PortMappings) != 1 || p.PortMappings[0].ContainerPort != 9795 || s.ReadinessPath != "/metrics" || s.ReadinessPort != 9795 {
		t.Errorf("ports %+v, readiness %s:%d", p.PortMappings, s.ReadinessPath, s.ReadinessPort)
	}
	mounts := map[string]Mount{}
	for _, m := range c.Mounts {
		mounts[m.ContainerPath] = m
	}
	for path, host := range map[string]string{"/sys/kernel/btf": "/sys/kernel/btf", "/sys/fs/cgroup": "/sys/fs/cgroup", "/run/runc": "/run/runc",
		"/run/containerd": "/run/containerd", "/run/docker/runtime-runc": "/run/docker/runtime-runc", "/var/lib/docker/containers": "/var/lib/docker/containers",
		"/run/containers": "/run/containers", "/var/lib/containers/storage/overlay-containers": "/var/lib/containers/storage/overlay-containers"} {
		if m := mounts[path]; m.HostPath != host || !m.Readonly {
			t.Errorf("mount %s: %+v", path, m)
		}
	}
	if len(c.Mounts) != 8 || len(s.HostDirs) != 6 || s.GracePeriod.Seconds() != 10 {
		t.Errorf("%d mounts, %d directories made, grace %v", len(c.Mounts), len(s.HostDirs), s.GracePeriod)
	}

	// A field the translation does not know fails it.
	bad := strings.Replace(string(b), "      hostPID: true\n", "      hostPID: true\n      hostUsers: false\n", 1)
	if _, err := DaemonSetPodSpec([]byte(bad)); err == nil || !strings.Contains(err.Error(), "hostUsers") {
		t.Errorf("an unknown field: %v", err)
	}
}

// A CRI log file read while it is written: a stream's P parts are joined
// up to its F line, another stream's lines in between; parts without
// their F line yet and a last line without its newline are left out.
func TestParseCRILog(t *testing.T) {
	const t1, t2, t3 = "2024-05-01T10:00:00.000000001Z", "2024-05-01T10:00:00.5Z", "2024-05-01T10:00:01Z"
	log := t1 + " stdout P {\"args\":[\"a\n" +
		t2 + " stderr F warning\n" +
		t2 + " stdout P b\",\n" +
		t3 + " stdout F \"c\"]}\n" +
		t3 + " stderr P cut\n" +
		t3 + " stdout F {\"half\":"
	got, err := parseCRILog("0.log", log)
	if err != nil {
		t.Fatal(err)
	}
	ts := func(s string) time.Time { v, _ := time.Parse(time.RFC3339Nano, s); return v }
	want := []CRILogLine{{ts(t2), "stderr", "warning"}, {ts(t1), "stdout", `{"args":["ab","c"]}`}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := parseCRILog("0.log", t1+" stdout X x\n"); err == nil || !strings.Contains(err.Error(), "0.log:1: not a CRI log line") {
		t.Errorf("a bad tag: %v", err)
	}
}
