// SPDX-License-Identifier: Apache-2.0

// Package container tells which container a process belongs to, without
// asking any daemon: from the cgroup path conventions of the common
// runtimes, and from runc's state files.
package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/procfs"
)

// Info names a container.
type Info = event.Container

// scope prefixes of systemd-managed container cgroups, and their runtime.
var scopes = []struct{ prefix, runtime string }{
	{"docker-", "docker"},
	{"cri-containerd-", "containerd"},
	{"crio-", "cri-o"},
	{"libpod-", "podman"},
}

func isID(s string) bool {
	if len(s) < 32 || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// FromCgroup recognises a container from its cgroup v2 path.
func FromCgroup(path string) (Info, bool) {
	var info Info
	parts := strings.Split(path, "/")
	for i, p := range parts {
		// Kubernetes pod slices and cgroupfs pod directories.
		if uid, ok := podUID(p); ok {
			info.PodUID = uid
			info.Runtime = "kubernetes"
		}
		if name, ok := strings.CutSuffix(p, ".scope"); ok {
			for _, s := range scopes {
				if id, ok := strings.CutPrefix(name, s.prefix); ok && isID(id) {
					info.ID, info.Runtime = id, s.runtime
				}
			}
			continue
		}
		if isID(p) && i > 0 {
			switch {
			case parts[i-1] == "docker":
				info.ID, info.Runtime = p, "docker"
			case info.PodUID != "":
				info.ID = p // cgroupfs driver: /kubepods/<qos>/pod<uid>/<id>
			}
		}
		if id, ok := strings.CutPrefix(p, "libpod-"); ok && isID(id) {
			info.ID, info.Runtime = id, "podman"
		}
	}
	if info.ID == "" {
		return Info{}, false
	}
	return info, true
}

// podUID reads "kubepods-burstable-pod<uid>.slice" or "pod<uid>".
func podUID(p string) (string, bool) {
	p = strings.TrimSuffix(p, ".slice")
	i := strings.LastIndex(p, "pod")
	if i < 0 || (i > 0 && p[i-1] != '-') || !strings.HasPrefix(p, "kubepods") && i != 0 {
		return "", false
	}
	uid := strings.ReplaceAll(p[i+3:], "_", "-")
	if len(uid) != 36 || strings.Count(uid, "-") != 4 {
		return "", false
	}
	return uid, true
}

// RuncRoots are where runc keeps state: plain runc, containerd's
// namespaces, and Docker's.
var RuncRoots = []string{"/run/runc", "/run/containerd/runc/*", "/run/docker/runtime-runc/*"}

// runcState is the part of runc's state.json nstrace reads.
type runcState struct {
	ID      string `json:"id"`
	InitPID int    `json:"init_process_pid"`
}

// Runc is one runc container as found on disk.
type Runc struct {
	Info
	InitPID uint32
	PidNS   uint64
}

// runcStates lists the state.json files under roots: one per container.
func runcStates(roots []string) []string {
	var out []string
	for _, pattern := range roots {
		states, _ := filepath.Glob(filepath.Join(pattern, "*", "state.json"))
		out = append(out, states...)
	}
	return out
}

// ScanRunc lists the runc containers whose state is under roots, with the
// pid namespace of their init process (0 if it cannot be read).
func ScanRunc(procRoot string, roots []string) []Runc {
	var out []Runc
	for _, path := range runcStates(roots) {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var st runcState
		if json.Unmarshal(b, &st) != nil || st.ID == "" {
			continue
		}
		r := Runc{Info: Info{ID: st.ID, Name: st.ID, Runtime: "runc"}, InitPID: uint32(st.InitPID)}
		if st.InitPID > 0 {
			set, _ := procfs.ReadPIDNS(procRoot, uint32(st.InitPID))
			r.PidNS = set[ns.Pid]
		}
		out = append(out, r)
	}
	return out
}

// Registry attributes events to containers and remembers what it found.
type Registry struct {
	procRoot  string
	runcRoots []string
	hostPidNS uint64
	byCgroup  map[string]*Info
	byPidNS   map[uint64]*Info
	stamp     string
	checked   time.Time
}

// checkEvery bounds how often events from an unknown pid namespace make
// the registry look at runc's state files: a busy namespace that is no
// container costs a few stat calls per interval, not per event.
const checkEvery = 2 * time.Millisecond

// NewRegistry returns a registry; processes in hostPidNS are never in a
// container.
func NewRegistry(procRoot string, runcRoots []string, hostPidNS uint64) *Registry {
	r := &Registry{procRoot: procRoot, runcRoots: runcRoots, hostPidNS: hostPidNS,
		byCgroup: map[string]*Info{}, byPidNS: map[uint64]*Info{}}
	r.scan()
	return r
}

// stateStamp summarises runc's state files (names and modification times):
// it changes whenever a container is created, started or removed.
func (r *Registry) stateStamp() string {
	var b strings.Builder
	for _, path := range runcStates(r.runcRoots) {
		if st, err := os.Stat(path); err == nil {
			fmt.Fprintf(&b, "%s %d %d\n", path, st.ModTime().UnixNano(), st.Size())
		}
	}
	return b.String()
}

func (r *Registry) scan() {
	r.stamp = r.stateStamp()
	for _, c := range ScanRunc(r.procRoot, r.runcRoots) {
		if c.PidNS != 0 && c.PidNS != r.hostPidNS {
			info := c.Info
			r.byPidNS[c.PidNS] = &info
		}
	}
}

// Any reports whether any container is known.
func (r *Registry) Any() bool { return len(r.byPidNS) > 0 }

// Lookup returns the container of a process with this cgroup path and pid
// namespace, or nil.
func (r *Registry) Lookup(cgroup string, pidNS uint64) *Info {
	if cgroup != "" && cgroup != "/" {
		info, ok := r.byCgroup[cgroup]
		if !ok {
			if i, found := FromCgroup(cgroup); found {
				info = &i
			}
			if len(r.byCgroup) > 4096 {
				clear(r.byCgroup)
			}
			r.byCgroup[cgroup] = info
		}
		if info != nil {
			return info
		}
	}
	if pidNS == 0 || pidNS == r.hostPidNS {
		return nil
	}
	if info, ok := r.byPidNS[pidNS]; ok {
		return info
	}
	// An unknown pid namespace: look again only if runc's state changed.
	if time.Since(r.checked) < checkEvery {
		return nil
	}
	r.checked = time.Now()
	if r.stateStamp() != r.stamp {
		r.scan()
		return r.byPidNS[pidNS]
	}
	return nil
}

// ErrNotFound is returned by Find for an unknown container.
var ErrNotFound = errors.New("container not found")

// Find locates a running container by id, unique id prefix or name, and
// returns a process in it.
func Find(procRoot, cgroupRoot string, runcRoots []string, ref string) (uint32, Info, error) {
	type hit struct {
		pid  uint32
		info Info
	}
	var hits []hit
	for _, c := range ScanRunc(procRoot, runcRoots) {
		if c.ID == ref || (len(ref) >= 3 && strings.HasPrefix(c.ID, ref)) {
			hits = append(hits, hit{c.InitPID, c.Info})
		}
	}
	if len(hits) == 0 && cgroupRoot != "" {
		_ = filepath.WalkDir(cgroupRoot, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			info, ok := FromCgroup(strings.TrimPrefix(path, cgroupRoot))
			if !ok || !(info.ID == ref || (len(ref) >= 3 && strings.HasPrefix(info.ID, ref))) {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			if err != nil {
				return nil
			}
			if f := strings.Fields(string(b)); len(f) > 0 {
				if pid, err := strconv.ParseUint(f[0], 10, 32); err == nil {
					hits = append(hits, hit{uint32(pid), info})
					return filepath.SkipDir
				}
			}
			return nil
		})
	}
	switch {
	case len(hits) == 0:
		return 0, Info{}, fmt.Errorf("%w: %q (looked for runc state in %s and in the cgroup tree)", ErrNotFound, ref, strings.Join(runcRoots, ", "))
	case len(hits) > 1 && hits[0].info.ID != hits[1].info.ID:
		return 0, Info{}, fmt.Errorf("container %q is ambiguous: %s, %s", ref, hits[0].info.ID, hits[1].info.ID)
	}
	return hits[0].pid, hits[0].info, nil
}
