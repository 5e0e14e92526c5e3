// SPDX-License-Identifier: Apache-2.0

package deploy

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nstrace/nstrace/internal/testutil"
)

// The DaemonSet's pod, run through containerd's CRI from the manifest as
// a kubelet runs it (the image make image builds, the host's pid
// namespace, the capabilities, mounts, args and metrics port): its
// readiness endpoint answers; its events reach the container's CRI log
// file under /var/log/pods as TIMESTAMP stdout F {json} lines, an exec in
// another pod attributed to that pod, a host exec with its host pid; and
// stopped as the kubelet stops it, it exits 0 with its summary.
func TestPrivilegedDaemonSetPod(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := testutil.StartCRI(t)
	d := testutil.RunDaemonSet(t, c)
	if !strings.HasPrefix(d.LogPath, testutil.PodLogRoot+"/nstrace_nstrace-") || !strings.HasSuffix(d.LogPath, "/nstrace/0.log") {
		t.Errorf("log file %s", d.LogPath)
	}
	resp, err := http.Get(d.Ready)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "nstrace_events_total") {
		t.Errorf("GET %s: %s %.200q", d.Ready, resp.Status, body)
	}

	checkSecurity(t, c.Inspect(t, d.ContainerID).Info.PID)

	mark := fmt.Sprint(rand.IntN(1_000_000))
	p := c.RunPod(t, testutil.NewPod("target-"+mark, "nstrace-test-"+mark))
	id := p.Start(t, testutil.NewContainer("app", "sleep", "3600"))
	c.ExecSync(t, id, "/bin/true", "pod-"+mark)
	pidFile := filepath.Join(t.TempDir(), "pid")
	if out, err := exec.Command("sh", "-c", "echo $$ >"+pidFile+"; exec /bin/true host-"+mark).CombinedOutput(); err != nil {
		t.Fatalf("sh: %v: %s", err, out)
	}
	hostPID, _ := os.ReadFile(pidFile)

	inPod := logEvent(t, d, "/bin/true pod-"+mark)
	ct, _ := inPod["container"].(map[string]any)
	pod, _ := ct["pod"].(map[string]any)
	m := p.Config.Metadata
	if ct["id"] != id || ct["runtime"] != "containerd" || pod["name"] != m.Name || pod["namespace"] != m.Namespace || pod["uid"] != m.UID || pod["container"] != "app" {
		t.Errorf("exec in pod %s/%s (%s) logged with container %v", m.Namespace, m.Name, id, ct)
	}
	host := logEvent(t, d, "/bin/true host-"+mark)
	if fmt.Sprintf("%.0f", host["pid"]) != strings.TrimSpace(string(hostPID)) || host["container"] != nil {
		t.Errorf("host exec logged with pid %v (want %s), container %v", host["pid"], strings.TrimSpace(string(hostPID)), host["container"])
	}

	if code := d.Stop(t); code != 0 {
		t.Errorf("the DaemonSet's container exited %d", code)
	}
	lines, err := testutil.ReadCRILog(d.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var stderr []string
	for _, l := range lines {
		if l.Stream == "stderr" {
			stderr = append(stderr, l.Message)
		}
	}
	if len(stderr) != 1 || !strings.Contains(stderr[0], " events, 0 lost") {
		t.Errorf("the container's stderr: %q, want its summary", stderr)
	}
}

// checkSecurity checks that the runtime ran nstrace as the manifest asks:
// in the host's pid namespace, with exactly the four capabilities, no new
// privileges, as root, on a read-only root file system.
func checkSecurity(t *testing.T, pid int) {
	t.Helper()
	proc := fmt.Sprintf("/proc/%d/", pid)
	status, err := os.ReadFile(proc + "status")
	if err != nil {
		t.Fatal(err)
	}
	// CAP_DAC_READ_SEARCH 2, CAP_SYS_PTRACE 19, CAP_PERFMON 38, CAP_BPF 39.
	const caps = 1<<2 | 1<<19 | 1<<38 | 1<<39
	for _, want := range []string{fmt.Sprintf("CapEff:\t%016x\n", caps), fmt.Sprintf("CapBnd:\t%016x\n", caps), "NoNewPrivs:\t1\n", "Uid:\t0\t0\t0\t0\n"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("nstrace in its pod: no %q in %s", want, status)
		}
	}
	if ours, _ := os.Readlink("/proc/self/ns/pid"); ours == "" || ours != readlink(t, proc+"ns/pid") {
		t.Errorf("nstrace in its pod: pid namespace %s, the host's %s", readlink(t, proc+"ns/pid"), ours)
	}
	mounts, err := os.ReadFile(proc + "mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	root := ""
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == "/" {
			root = f[5]
		}
	}
	if root != "ro" && !strings.HasPrefix(root, "ro,") {
		t.Errorf("nstrace in its pod: its root is mounted %q", root)
	}
}

func readlink(t *testing.T, path string) string {
	t.Helper()
	l, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// logEvent waits for the exec of argv in the DaemonSet pod's log file
// and returns it. The line that carries argv's last word (the test's
// marker) must be one JSON event; the others, the host's every exec
// (other tests' and builds' too, of any length), are not looked at.
func logEvent(t *testing.T, d *testutil.DaemonSetPod, argv string) map[string]any {
	t.Helper()
	words := strings.Fields(argv)
	marker := words[len(words)-1]
	var found map[string]any
	n := 0
	if !testutil.Eventually(20*time.Second, 100*time.Millisecond, func() bool {
		lines, err := testutil.ReadCRILog(d.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		n = len(lines)
		for _, l := range lines {
			if l.Stream != "stdout" || !strings.Contains(l.Message, marker) {
				continue
			}
			var e map[string]any
			if err := json.Unmarshal([]byte(l.Message), &e); err != nil {
				t.Fatalf("%s: not one JSON event: %v: %q", d.LogPath, err, l.Message)
			}
			if e["event"] == "exec" && fmt.Sprint(e["args"]) == fmt.Sprint(toAny(words)) {
				found = e
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no exec %q in %s after 20s (%d lines)", argv, d.LogPath, n)
	}
	return found
}
