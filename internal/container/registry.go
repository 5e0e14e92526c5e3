// SPDX-License-Identifier: Apache-2.0

package container

import (
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/event"
)

// Registry attributes events to containers. It keeps an index of the
// containers in runc's state (every runtime here runs its containers
// with runc), by cgroup id, learned the moment a runtime writes a
// container's state.json (inotify), so that a container that is gone by
// the time its events are read is still named. It is safe for use by
// several goroutines.
type Registry struct {
	roots Roots

	mu        sync.Mutex
	byCgroup  map[CgroupKey]*Info     // answers given, nil for no container
	firstSeen map[CgroupKey]asked     // cgroups not (yet) known as containers
	index     map[CgroupKey]*Info     // runc state, by cgroup
	byID      map[string]*stateOf     // runc state, by container id
	pods      map[CgroupKey]CgroupKey // a pod's container's cgroup: its pod's cgroup
	seenState map[string]bool         // state.json files read
	created   map[string]bool         // container directories the watch saw made
	watch     *watcher
	// onLearn is OnContainer's function, and learned what it is to be
	// told once the lock is released.
	onLearn func(Info, CgroupKey)
	learned []learnedCgroup
}

// learnedCgroup is a container learned from the runtimes' state, with a
// cgroup the kernel filters on for it.
type learnedCgroup struct {
	info   Info
	kernel CgroupKey
}

const (
	// registryMax bounds each of the registry's tables: past it, the
	// oldest answers are dropped and asked again if needed.
	registryMax = 8192
	// youngFor is how long a new cgroup that looks like no container is
	// asked about again: a runtime writes its state a moment after it
	// moved the container's first process in.
	youngFor = 2 * time.Second
	askEvery = 20 * time.Millisecond
	// cgroupAncestors is how far above a process's cgroup a container's
	// is looked for: as far as the kernel's --container filter looks
	// (NST_CGROUP_DEPTH, the cgroup itself and seven above).
	cgroupAncestors = 7
)

// stateOf is a container as runc's state gives it: the file, and the
// hierarchies in which it names the container's cgroup.
type stateOf struct {
	info   *Info
	path   string
	v2, v1 bool
}

// names reports whether the state names the container's cgroup in
// cg's hierarchy.
func (s *stateOf) names(cg Cgroup) bool { return cg.V1 && s.v1 || !cg.V1 && s.v2 }

// asked is when a cgroup was first and last asked about.
// above is the container found above it meanwhile, if any.
type asked struct {
	first, last time.Time
	above       *Info
}

// NewRegistry reads the runtimes' state under roots and, if watch is set,
// follows it as it changes. Close stops following.
func NewRegistry(roots Roots, watch bool) *Registry {
	r := &Registry{roots: roots, byCgroup: map[CgroupKey]*Info{}, firstSeen: map[CgroupKey]asked{},
		index: map[CgroupKey]*Info{}, byID: map[string]*stateOf{}, pods: map[CgroupKey]CgroupKey{}, seenState: map[string]bool{}, created: map[string]bool{}}
	if watch {
		r.watch = newWatcher(r)
	}
	r.mu.Lock()
	r.scanLocked()
	r.unlock()
	return r
}

// OnContainer calls f with each container the registry knows now and,
// from then on, each it learns of from the runtimes' state, once per
// cgroup the kernel filters on for it (KernelCgroups's: its pod's for a
// pod's container, else its own; one per hierarchy). f is called with
// the registry unlocked, from the watch's goroutine or a lookup's, and
// may see a container more than once.
func (r *Registry) OnContainer(f func(c Info, kernel CgroupKey)) {
	r.mu.Lock()
	r.onLearn = f
	for cg, c := range r.index {
		r.learned = append(r.learned, learnedCgroup{*c, r.kernelCgroupLocked(cg)})
	}
	r.unlock()
}

// unlock releases the registry's lock, then tells OnContainer's function
// of the containers learned meanwhile.
func (r *Registry) unlock() {
	learned, f := r.learned, r.onLearn
	r.learned = nil
	r.mu.Unlock()
	for _, l := range learned {
		f(l.info, l.kernel)
	}
}

// kernelCgroupLocked is the cgroup the kernel filters on for a
// container's cgroup cg: its pod's, for a pod's container.
func (r *Registry) kernelCgroupLocked(cg CgroupKey) CgroupKey {
	if pod, ok := r.pods[cg]; ok {
		return pod
	}
	return cg
}

// Close stops following the runtimes' state.
func (r *Registry) Close() {
	// Lookups from now on drain no watch, whose fd may be another
	// file's once closed; the watch's goroutine, which takes the lock,
	// ends before its fd is closed.
	r.mu.Lock()
	w := r.watch
	r.watch = nil
	r.mu.Unlock()
	if w != nil {
		w.close()
	}
}

// Any reports whether any container is known.
func (r *Registry) Any() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.index) > 0
}

// rootCgroupID is the id (the kernfs inode) of the root of every cgroup
// hierarchy, v2's and v1's: the host's own processes are there, and no
// container is.
const rootCgroupID = 1

// Lookup returns the container of a process in cgroup cg, or nil.
func (r *Registry) Lookup(cg Cgroup) *Info {
	if cg.ID == 0 && cg.Name == "" || cg.ID == rootCgroupID {
		return nil
	}
	r.mu.Lock()
	defer r.unlock()
	key := cg.Key()
	if cg.ID != 0 {
		if c, ok := r.byCgroup[key]; ok {
			return c
		}
	}
	// A cgroup not (yet) known as a container is asked about again at
	// most every askEvery, for youngFor: its events do not each pay a
	// look at the runtimes' state.
	now := time.Now()
	first, asked := r.firstSeen[key]
	if asked && now.Sub(first.last) < askEvery && now.Sub(first.first) < youngFor {
		return first.above
	}
	c := r.identifyLocked(cg)
	if c == nil && cg.ID != 0 {
		// Not a container, or not yet in the runtime's state: ask again
		// for a short while before taking no for an answer, or the
		// container above it for the answer (a container made below
		// another's, its state not yet written, would be taken for it).
		c = r.aboveLocked(cg)
		if !asked {
			first.first = now
		}
		first.last, first.above = now, c
		if now.Sub(first.first) < youngFor {
			if len(r.firstSeen) >= registryMax {
				clear(r.firstSeen)
			}
			r.firstSeen[key] = first
			return c
		}
		delete(r.firstSeen, key)
	}
	if cg.ID != 0 {
		r.remember(r.byCgroup, key, c)
	}
	return c
}

// LookupPath returns the container of a process whose cgroup is at path
// in the v2 hierarchy, or with v1 in the v1 one (as /proc/PID/cgroup
// gives it), or nil.
func (r *Registry) LookupPath(path string, v1 bool) *Info {
	return r.Lookup(r.roots.CgroupAt(path, v1))
}

// remember stores c under k, dropping the table first when it is full.
func (r *Registry) remember(m map[CgroupKey]*Info, k CgroupKey, c *Info) {
	if len(m) >= registryMax {
		clear(m)
	}
	m[k] = c
}

// identifyLocked names cg's container: the runc index first (it knows
// runc's own and containerd's containers, whatever their cgroups' names),
// then the runtimes' cgroup names. A miss in the index for a cgroup no
// runtime named rescans the state files, in case the watch missed them.
func (r *Registry) identifyLocked(cg Cgroup) *Info {
	if c := r.index[cg.Key()]; c != nil && cg.ID != 0 {
		return c
	}
	byName, named := FromCgroup(cg)
	prior := r.byID[byName.ID]
	if (!named || byName.Runtime == "" || prior != nil) && cg.ID != 0 {
		// The watch may not have read the runtime's newest state yet: a
		// cgroup named like none, a pod's container (cgroupfs driver)
		// whose runtime only the state tells, or a container whose
		// state named another cgroup: one made again on a restart, whose
		// state (at the same path) is read again, watch or not.
		if r.watch != nil {
			r.applyLocked(r.watch.drain())
		}
		if named && prior != nil {
			delete(r.seenState, prior.path)
		}
		r.scanLocked()
		if c := r.index[cg.Key()]; c != nil {
			return c
		}
		if c := r.createdLocked(cg); !named && c != nil {
			return c
		}
	}
	if !named {
		return nil
	}
	c := byName
	if known := r.byID[c.ID]; known != nil {
		if cg.ID != 0 && known.names(cg) {
			// runc's state gives this container another cgroup in this
			// hierarchy: this one is only named like it, as anyone who
			// may make cgroups (a user's delegated systemd subtree) can
			// name one.
			return nil
		}
		// The same container, seen through runc's state: its runtime as
		// the cgroup names it, its pod as either says.
		merged := *known.info
		if c.Runtime != "" {
			merged.Runtime = c.Runtime
		}
		merged.Pod = mergePod(merged.Pod, c.Pod)
		c = merged
	}
	if c.Runtime == "" {
		return nil // a pod's container no runtime's state knows: unsure
	}
	r.roots.describe(&c)
	return &c
}

// aboveLocked names the container whose cgroup is above cg, by cg's
// path: a process the container moved into a cgroup of its own below
// (systemd in a container, a container in a container) is in that
// container still. Only a container's own cgroup answers, never a
// pod's (a process in a pod's cgroup is in none of its containers).
func (r *Registry) aboveLocked(cg Cgroup) *Info {
	path := cg.Path
	if path == "" {
		return nil
	}
	for range cgroupAncestors {
		if path = filepath.Dir(path); path == "/" {
			return nil
		}
		up := r.roots.CgroupAt(path, cg.V1)
		if up.ID == 0 {
			return nil
		}
		// The runtimes' state was read again for cg a moment ago: an
		// ancestor is known from it, or named like a container.
		if c := r.index[up.Key()]; c != nil {
			return c
		}
		if _, named := FromCgroup(up); named {
			if c := r.identifyLocked(up); c != nil {
				return c
			}
		}
	}
	return nil
}

// scanLocked reads every runc state file not read before.
func (r *Registry) scanLocked() {
	for _, pattern := range r.roots.Runc {
		states, _ := filepath.Glob(filepath.Join(pattern, "*", "state.json"))
		for _, path := range states {
			if !r.seenState[path] {
				r.readStateLocked(path)
			}
		}
	}
}

// readStateLocked indexes one state.json.
func (r *Registry) readStateLocked(path string) {
	rc, ok := readRuncState(&r.roots, path)
	if !ok || rc.cgroup.ID == 0 && rc.cgroupV1.ID == 0 {
		return
	}
	if len(r.seenState) >= registryMax {
		clear(r.seenState)
	}
	r.seenState[path] = true
	c := rc.info
	// A runtime that names its cgroups (Podman, CRI-O, Docker) says
	// whose the container is better than the state's place does.
	named := rc.cgroup
	if named.ID == 0 {
		named = rc.cgroupV1
	}
	if byName, ok := FromCgroup(named.Cgroup); ok && byName.ID == c.ID {
		if byName.Runtime != "" && byName.Runtime != c.Runtime {
			// Plain runc's id is the name its user gave; the id of
			// Podman's or CRI-O's container in runc's state is not.
			if c.Runtime == "runc" {
				c.Name = ""
			}
			c.Runtime = byName.Runtime
		}
		c.Pod = mergePod(c.Pod, byName.Pod)
	}
	if c.Runtime == "containerd" && c.Pod == nil {
		c.Name = c.ID // ctr: the id is the name given
	}
	r.roots.describe(&c)
	if len(r.index) >= registryMax {
		clear(r.index)
		clear(r.byID)
		clear(r.pods)
	}
	for _, cg := range []runcCgroup{rc.cgroup, rc.cgroupV1} {
		if cg.ID == 0 {
			continue
		}
		r.index[cg.Key()] = &c
		delete(r.byCgroup, cg.Key())
		if c.Pod != nil && cg.parent != 0 {
			r.pods[cg.Key()] = CgroupKey{cg.parent, cg.V1}
		}
		if r.onLearn != nil {
			r.learned = append(r.learned, learnedCgroup{c, r.kernelCgroupLocked(cg.Key())})
		}
	}
	r.byID[c.ID] = &stateOf{info: &c, path: path, v2: rc.cgroup.ID != 0, v1: rc.cgroupV1.ID != 0}
}

// Containers lists the containers the index knows, by cgroup: a
// container on cgroup v1 and v2 at once has both.
func (r *Registry) Containers() map[CgroupKey]Info {
	r.mu.Lock()
	defer r.unlock()
	r.scanLocked()
	out := make(map[CgroupKey]Info, len(r.index))
	for id, c := range r.index {
		out[id] = *c
	}
	return out
}

// watcher follows the runc state roots with inotify: a new namespace
// directory, a new container directory, a state.json written. A state
// read late (the container came and went) is gone; the directory's name,
// which the event itself carries, is not.
type watcher struct {
	fd   int
	stop int           // an eventfd: close's word to run
	done chan struct{} // closed when run has returned
	mu   sync.Mutex
	dirs map[int32]string
	buf  []byte
}

// change is what the watch saw: state files to read, directories made.
type change struct {
	states, created []string
}

const watchMask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_CLOSE_WRITE

func newWatcher(r *Registry) *watcher {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil
	}
	w := &watcher{fd: fd, stop: stop, done: make(chan struct{}), dirs: map[int32]string{}, buf: make([]byte, 64<<10)}
	for _, pattern := range r.roots.Runc {
		// Watch the deepest existing directory above the pattern's
		// wildcard, and everything below it that exists.
		base := pattern
		if i := strings.IndexByte(pattern, '*'); i >= 0 {
			base = filepath.Dir(pattern[:i])
		}
		w.add(base)
		matches, _ := filepath.Glob(pattern)
		for _, m := range matches {
			w.add(m)
			subs, _ := filepath.Glob(filepath.Join(m, "*"))
			for _, s := range subs {
				w.add(s)
			}
		}
	}
	go w.run(r)
	return w
}

func (w *watcher) add(dir string) {
	wd, err := unix.InotifyAddWatch(w.fd, dir, watchMask)
	if err != nil {
		return
	}
	w.mu.Lock()
	w.dirs[int32(wd)] = dir
	w.mu.Unlock()
}

// close stops run, then closes the descriptors: closed under a running
// poll, the inotify fd's number could be handed to another watcher,
// whose events this one's run would then take.
func (w *watcher) close() {
	one := [8]byte{1}
	_, _ = unix.Write(w.stop, one[:])
	<-w.done
	unix.Close(w.fd)
	unix.Close(w.stop)
}

// run applies what the watch sees as it comes, so that a state file is
// read while it exists; it ends when close asks.
func (w *watcher) run(r *Registry) {
	defer close(w.done)
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}, {Fd: int32(w.stop), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			return
		}
		if fds[1].Revents != 0 || fds[0].Revents&(unix.POLLNVAL|unix.POLLERR) != 0 {
			return
		}
		ch := w.drain()
		r.mu.Lock()
		r.applyLocked(ch)
		r.unlock()
	}
}

// drain reads every event queued now; a new directory is watched in turn.
func (w *watcher) drain() change {
	var ch change
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		n, err := unix.Read(w.fd, w.buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return ch
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&w.buf[off]))
			name := cstr(w.buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)])
			off += unix.SizeofInotifyEvent + int(ev.Len)
			dir, ok := w.dirs[ev.Wd]
			if !ok || name == "" {
				continue
			}
			path := filepath.Join(dir, name)
			switch {
			case ev.Mask&unix.IN_ISDIR != 0:
				if wd, err := unix.InotifyAddWatch(w.fd, path, watchMask); err == nil {
					w.dirs[int32(wd)] = path
				}
				ch.created = append(ch.created, path)
				ch.states = append(ch.states, filepath.Join(path, "state.json"))
			case name == "state.json":
				ch.states = append(ch.states, path)
			}
		}
	}
}

// applyLocked indexes the state files the watch saw and notes the
// directories made.
func (r *Registry) applyLocked(ch change) {
	for _, d := range ch.created {
		if len(r.created) >= registryMax {
			clear(r.created)
		}
		r.created[d] = true
	}
	for _, st := range ch.states {
		delete(r.seenState, st)
		r.readStateLocked(st)
	}
}

// createdLocked names a container from the directories the watch saw a
// runtime make, when its state is gone: a runc container is named after
// its directory, and so is its cgroup, directly under the root (plain
// runc) or under its containerd namespace.
func (r *Registry) createdLocked(cg Cgroup) *Info {
	for _, pattern := range r.roots.Runc {
		dir := pattern
		if strings.HasSuffix(pattern, "/*") {
			if cg.Parent == "" {
				continue
			}
			dir = filepath.Join(filepath.Dir(pattern), cg.Parent)
		} else if cg.Parent != "" {
			continue
		}
		if r.created[filepath.Join(dir, cg.Name)] {
			c := Info{ID: cg.Name, Name: cg.Name, Runtime: runtimeOfRoot(dir)}
			if c.Runtime == "docker" {
				c.Name = ""
				r.roots.describe(&c)
			}
			return &c
		}
	}
	return nil
}

func cstr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// mergePod combines what two sources say of a pod: the annotations know
// its name, the cgroup its uid.
func mergePod(a, b *event.Pod) *event.Pod {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	m := *a
	if m.UID == "" {
		m.UID = b.UID
	}
	return &m
}
