// SPDX-License-Identifier: Apache-2.0

package container

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/procfs"
)

// Roots are where the runtimes keep their state on disk.
type Roots struct {
	// Cgroups are where the cgroup hierarchies that identify a process
	// are mounted: v2's, and the v1 one for a process in the v2 root.
	Cgroups procfs.Hierarchies
	// Runc are runc state roots (globs), each holding ID/state.json: plain
	// runc's, containerd's per namespace, Docker's.
	Runc []string
	// Docker holds ID/config.v2.json.
	Docker string
	// Podman holds containers.json (containers/storage).
	Podman []string
	// CRIO holds ID/userdata/config.json.
	CRIO string
}

// DefaultRoots are the runtimes' usual places; the cgroup hierarchies are
// found at start.
var DefaultRoots = Roots{
	Runc:   []string{"/run/runc", "/run/containerd/runc/*", "/run/docker/runtime-runc/*"},
	Docker: "/var/lib/docker/containers",
	Podman: []string{"/var/lib/containers/storage/overlay-containers/containers.json", "/run/containers/storage/overlay-containers/containers.json"},
	CRIO:   "/run/containers/storage/overlay-containers",
}

// runcState is the part of runc's state.json nstrace reads.
type runcState struct {
	ID          string            `json:"id"`
	InitPID     int               `json:"init_process_pid"`
	CgroupPaths map[string]string `json:"cgroup_paths"`
	Config      struct {
		Labels []string `json:"labels"`
	} `json:"config"`
}

// labels are the state's labels: the bundle directory its creator
// recorded ("bundle") and, runc 1.0 on, the bundle's annotations.
func (s *runcState) labels() map[string]string {
	m := make(map[string]string, len(s.Config.Labels))
	for _, l := range s.Config.Labels {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// runtimeOfRoot says who starts containers whose runc state is in dir:
// containerd's namespace "moby" is Docker's.
func runtimeOfRoot(dir string) string {
	switch {
	case strings.Contains(dir, "/docker/"), strings.HasSuffix(dir, "/containerd/runc/moby"):
		return "docker"
	case strings.Contains(dir, "/containerd/"):
		return "containerd"
	}
	return "runc"
}

// runcContainer is a container found in runc's state.
type runcContainer struct {
	info Info
	// Its cgroups: v2's, and the v1 one of Roots.Cgroups.Controller.
	cgroup, cgroupV1 runcCgroup
	initPID          uint32
}

// readRuncState reads one state.json into what nstrace needs, with the
// bundle's annotations (Kubernetes pods).
func readRuncState(r *Roots, path string) (runcContainer, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return runcContainer{}, false
	}
	var st runcState
	if json.Unmarshal(b, &st) != nil || st.ID == "" {
		return runcContainer{}, false
	}
	dir := filepath.Dir(filepath.Dir(path))
	rc := runcContainer{info: Info{ID: st.ID, Runtime: runtimeOfRoot(dir)}, initPID: uint32(st.InitPID)}
	// On cgroup v1, runc keeps the path in each controller's hierarchy
	// under the controller's name; "" is v2's.
	rc.cgroup = cgroupAt(st.CgroupPaths[""], r.Cgroups.V2)
	if r.Cgroups.Controller != "" {
		rc.cgroupV1 = cgroupAt(st.CgroupPaths[r.Cgroups.Controller], r.Cgroups.V1)
		rc.cgroupV1.V1 = true
	}
	if rc.info.Runtime == "runc" {
		rc.info.Name = st.ID
	}
	// The annotations are in the state's labels; a runc before 1.0 left
	// them in the bundle only, which a node agent may not see mounted.
	labels := st.labels()
	if first(labels, podNameKeys) != "" {
		annotate(&rc.info, labels)
	} else if bundle := labels["bundle"]; bundle != "" {
		annotateFile(&rc.info, filepath.Join(bundle, "config.json"))
	}
	return rc, true
}

// runcCgroup is a cgroup of a container in runc's state, named as the
// kernel names it, and the id of its parent: a pod's cgroup, for a pod's
// container.
type runcCgroup struct {
	Cgroup
	parent uint64
}

// cgroupAt names the cgroup at a path runc gives, under the hierarchy
// mounted at root; the zero one for none.
func cgroupAt(path, root string) runcCgroup {
	if path == "" {
		return runcCgroup{}
	}
	cg := runcCgroup{Cgroup: Cgroup{ID: inode(path), Name: filepath.Base(path)}}
	if parent := filepath.Dir(path); parent != root && parent != "/" {
		cg.Parent = filepath.Base(parent)
		cg.parent = inode(parent)
	}
	return cg
}

// inode is a path's inode number (a cgroup directory's is its id), or 0.
func inode(path string) uint64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

// ociConfig is the part of an OCI bundle's config.json nstrace reads.
type ociConfig struct {
	Annotations map[string]string `json:"annotations"`
}

// Kubernetes' annotations, as containerd's CRI plugin and CRI-O write them.
var (
	podNameKeys      = []string{"io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"}
	podNamespaceKeys = []string{"io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"}
	podUIDKeys       = []string{"io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"}
	containerKeys    = []string{"io.kubernetes.cri.container-name", "io.kubernetes.container.name"}
	imageKeys        = []string{"io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName"}
	// "sandbox" for the pod's sandbox, "container" for the others.
	typeKeys = []string{"io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType"}
)

func first(m map[string]string, keys []string) string {
	for _, k := range keys {
		if v := m[k]; v != "" {
			return v
		}
	}
	return ""
}

// annotateFile adds what an OCI config's annotations say.
func annotateFile(c *Info, configPath string) {
	b, err := os.ReadFile(configPath)
	if err != nil {
		return
	}
	var cfg ociConfig
	if json.Unmarshal(b, &cfg) == nil {
		annotate(c, cfg.Annotations)
	}
}

// annotate adds what a container's annotations say: the pod, the
// container's name in it, the image.
func annotate(c *Info, a map[string]string) {
	if name := first(a, podNameKeys); name != "" {
		if c.Pod == nil {
			c.Pod = &event.Pod{}
		}
		c.Pod.Name = name
		c.Pod.Namespace = first(a, podNamespaceKeys)
		if uid := first(a, podUIDKeys); uid != "" {
			c.Pod.UID = uid
		}
		c.Pod.Container = first(a, containerKeys)
		c.Pod.Sandbox = first(a, typeKeys) == "sandbox"
		if c.Pod.Sandbox {
			c.Pod.Container = ""
		}
	}
	if img := first(a, imageKeys); img != "" && c.Image == "" {
		c.Image = img
	}
}

// dockerConfig is the part of Docker's config.v2.json nstrace reads.
type dockerConfig struct {
	Name   string `json:"Name"`
	Config struct {
		Image string `json:"Image"`
	} `json:"Config"`
}

// podmanContainer is one entry of containers/storage's containers.json.
type podmanContainer struct {
	ID       string   `json:"id"`
	Names    []string `json:"names"`
	Metadata string   `json:"metadata"`
}

// describe adds what the runtime's own records say of c.ID: its name and
// image (Docker, Podman), its pod (CRI-O).
func (r *Roots) describe(c *Info) {
	switch c.Runtime {
	case "docker":
		var cfg dockerConfig
		if b, err := os.ReadFile(filepath.Join(r.Docker, c.ID, "config.v2.json")); err == nil && json.Unmarshal(b, &cfg) == nil {
			c.Name = strings.TrimPrefix(cfg.Name, "/")
			c.Image = cfg.Config.Image
		}
	case "podman":
		for _, path := range r.Podman {
			b, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			var list []podmanContainer
			if json.Unmarshal(b, &list) != nil {
				continue
			}
			for _, p := range list {
				if p.ID != c.ID {
					continue
				}
				if len(p.Names) > 0 {
					c.Name = p.Names[0]
				}
				var meta struct {
					ImageName string `json:"image-name"`
				}
				if json.Unmarshal([]byte(p.Metadata), &meta) == nil && meta.ImageName != "" {
					c.Image = meta.ImageName
				}
				return
			}
		}
	case "cri-o":
		annotateFile(c, filepath.Join(r.CRIO, c.ID, "userdata", "config.json"))
	}
}
