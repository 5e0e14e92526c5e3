// SPDX-License-Identifier: Apache-2.0

// Package probe loads nstrace's BPF programs, attaches the ones the chosen
// events need, and reads their records from the ring buffer. It is the
// only package that speaks to the kernel's BPF interface.
package probe

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/ns"
	"github.com/nstrace/nstrace/internal/procfs"
)

// DefaultBufferSize is the ring buffer's default size: enough to absorb a
// burst of thousands of execs while the reader catches up. Its pages are
// mapped twice into nstrace and count twice in its RSS.
const DefaultBufferSize = 4 << 20

// MinBufferSize is the smallest ring buffer nstrace accepts.
const MinBufferSize = 4096

// Errors Read and Next return besides decoding errors.
var (
	// ErrClosed: Interrupt or Close was called.
	ErrClosed = errors.New("probe closed")
	// ErrFlushed: every record queued when Flush was called has been read.
	ErrFlushed = errors.New("probe flushed")
	// ErrEmpty: Next found nothing queued.
	ErrEmpty = errors.New("nothing queued")
)

// Hooks says how the namespace system calls are caught.
type Hooks string

const (
	// HooksAuto uses fentry where the kernel allows BPF trampolines and
	// the raw syscall tracepoints where it does not.
	HooksAuto Hooks = ""
	// HooksFentry attaches to the kernel functions that do the work:
	// other system calls pay nothing.
	HooksFentry Hooks = "fentry"
	// HooksTracepoint attaches to the raw sys_enter and sys_exit
	// tracepoints: every system call pays a few compares.
	HooksTracepoint Hooks = "tracepoint"
	// HooksNone: no system call is watched, as no event selected needs
	// one. Reported, never asked for.
	HooksNone Hooks = "none"
)

// Options choose what the probe traces.
type Options struct {
	Kinds      event.KindSet
	BufferSize int // bytes, a power of two multiple of the page size
	Debug      bool
	Filter     Filter
	Hooks      Hooks
	// Limits override the kernel-side tables' sizes; 0 keeps the default.
	Limits Limits
	// ClaimExits recognises a process's last thread as kernels before
	// 6.16 need it, even where the tracepoint says (for tests).
	ClaimExits bool
	// Failed also reports execs that failed, with the file they tried.
	Failed bool
	// Ancestors gives every event its process's parents.
	Ancestors bool
	// CgroupV1 names a controller mounted as a cgroup v1 hierarchy (one
	// of procfs.CgroupV1Controllers): a process in the cgroup v2 root is
	// identified by its cgroup there. "": by its v2 cgroup only.
	CgroupV1 string
	// CgroupV1Hierarchy is that hierarchy's id (procfs.HierarchyID),
	// needed with CgroupV1: while the controller is bound to another
	// (unmounted, mounted again), processes are identified by their v2
	// cgroups, as the ids of the other's cgroups mean other cgroups.
	CgroupV1Hierarchy int
}

// cgroupV1 maps the controllers of procfs.CgroupV1Controllers to the
// kernel side's enum nst_v1_controller.
var cgroupV1 = map[string]nstraceNstV1Controller{
	"pids":    nstraceNstV1ControllerNST_CGV1PIDS,
	"memory":  nstraceNstV1ControllerNST_CGV1MEMORY,
	"cpu":     nstraceNstV1ControllerNST_CGV1CPU,
	"cpuacct": nstraceNstV1ControllerNST_CGV1CPUACCT,
	"devices": nstraceNstV1ControllerNST_CGV1DEVICES,
	"freezer": nstraceNstV1ControllerNST_CGV1FREEZER,
	"blkio":   nstraceNstV1ControllerNST_CGV1BLKIO,
	"cpuset":  nstraceNstV1ControllerNST_CGV1CPUSET,
}

// cgroupV1Key marks a key of the v1 hierarchy's cgroups (enum
// nst_cgroup_key) in the kernel side's records and tables.
const cgroupV1Key = uint64(1) << nstraceNstCgroupKeyNST_CGROUP_V1BIT

// cgroupV1ID is the kernel side's enum for a controller's name.
func cgroupV1ID(name string) (nstraceNstV1Controller, error) {
	if name == "" {
		return nstraceNstV1ControllerNST_CGV1NONE, nil
	}
	if id, ok := cgroupV1[name]; ok {
		return id, nil
	}
	return 0, fmt.Errorf("cgroup v1 controller %q: want one of %s", name, strings.Join(procfs.CgroupV1Controllers, ", "))
}

// checkCgroupV1 says why the options' cgroup v1 settings cannot work
// together, or returns nil: a filter on v1 cgroups with no controller to
// read them by would match nothing.
func (o *Options) checkCgroupV1() error {
	if _, err := cgroupV1ID(o.CgroupV1); err != nil {
		return err
	}
	if len(o.Filter.CgroupsV1) > 0 && o.CgroupV1 == "" {
		return errors.New("a cgroup v1 filter needs the cgroup v1 controller whose hierarchy it names")
	}
	if o.CgroupV1 != "" && o.CgroupV1Hierarchy <= 0 {
		return fmt.Errorf("cgroup v1 controller %s: the id of its hierarchy is needed", o.CgroupV1)
	}
	return nil
}

// Limits are the sizes of the kernel side's tables, each a way to lose
// events when full (see event.LostReason).
type Limits struct {
	Tracked    int // processes in the traced set (65536)
	Pending    int // unshare and setns calls in flight (4096)
	CloneFlags int // namespace-creating clones in flight (4096)
	// Full starts the pending and clone-flags tables full, as a test
	// of what nstrace does when they fill.
	Full bool
}

// Filter is what the kernel side drops before it queues anything.
type Filter struct {
	// Tracked reports only processes in the traced set: PIDs, and the
	// ones added later with Track. Follow adds every child of a traced
	// process to the set as it is born, in the kernel.
	Tracked bool
	PIDs    []uint32
	Follow  bool
	// Namespaces, if not empty, reports only processes with one of these
	// namespaces.
	Namespaces []NSRef
	// Cgroups and CgroupsV1, if not both empty, report only processes
	// in one of these cgroups or below one: v2 ids, and ids in the v1
	// hierarchy of Options.CgroupV1.
	Cgroups, CgroupsV1 []uint64
}

// cgroupKeys are the filter's cgroups as the kernel side keys them.
func (f *Filter) cgroupKeys() []uint64 {
	keys := append([]uint64(nil), f.Cgroups...)
	for _, id := range f.CgroupsV1 {
		keys = append(keys, id|cgroupV1Key)
	}
	return keys
}

// NSRef is a namespace inode and the types under which it counts.
type NSRef struct {
	Inode uint64
	Types ns.Mask
}

// Losses counts events the kernel could not deliver, by reason.
type Losses [event.LostReasons]uint64

// Total is the sum over all reasons.
func (l *Losses) Total() uint64 {
	var n uint64
	for _, v := range l {
		n += v
	}
	return n
}

// loadedMaps are the maps the loader touches; a map the chosen programs
// do not use is not created, and is nil here.
type loadedMaps struct {
	events, traced, nsFilter, cgroupFilter, cgroupsSent, pending, cloneFlags *ebpf.Map
}

// Probe is a loaded and attached set of nstrace programs.
type Probe struct {
	coll  *ebpf.Collection
	maps  loadedMaps
	vars  nstraceVariables
	links []link.Link
	ring  *ring
	dec   Decoder
	hooks Hooks
	// hooksNote says why the syscall hooks are what they are.
	hooksNote string
	exitProg  string
	fence     uint64
	// cgroupFiltered: the kernel side filters on the cgroup filter's map.
	cgroupFiltered bool
}

// BTFPath is where the running kernel exposes its type information.
var BTFPath = "/sys/kernel/btf/vmlinux"

// setnsWrapper is the kernel function behind the 64-bit setns system call.
var setnsWrapper = map[string]string{"amd64": "__x64_sys_setns", "arm64": "__arm64_sys_setns"}[runtime.GOARCH]

// plan is the programs to load, and which of them to attach.
type plan struct {
	attach []*ebpf.ProgramSpec
	load   []*ebpf.ProgramSpec
}

// programsFor lists the programs the options need. fork and clone share
// the fork tracepoint. Following a process tree needs the fork and exit
// tracepoints whatever the kinds shown: they keep the traced set.
func programsFor(p *nstraceProgramSpecs, opts Options, hooks Hooks, exitGroupDead bool) plan {
	kinds, f := opts.Kinds, opts.Filter
	var pl plan
	if kinds.Has(event.Fork) || kinds.Has(event.Clone) || (f.Tracked && f.Follow) {
		pl.attach = append(pl.attach, p.NstFork)
	}
	if kinds.Has(event.Exec) {
		pl.attach = append(pl.attach, p.NstExec)
	}
	if kinds.NeedsExit() || f.Tracked {
		if exitGroupDead {
			pl.attach = append(pl.attach, p.NstExit)
		} else {
			pl.attach = append(pl.attach, p.NstExitClaim)
		}
	}
	if kinds.Has(event.Comm) {
		pl.attach = append(pl.attach, p.NstComm)
	}
	// The raw syscall tracepoints serve what has no fentry program here,
	// and everything where trampolines are refused.
	if needsRawSyscalls(opts, hooks) {
		pl.attach = append(pl.attach, p.NstSysEnter, p.NstSysExit)
	}
	switch {
	case !needsSyscalls(kinds):
	case hooks == HooksFentry:
		if kinds.Has(event.Clone) {
			pl.attach = append(pl.attach, p.NstCloneIn, p.NstCloneOut)
		}
		if kinds.Has(event.Unshare) {
			pl.attach = append(pl.attach, p.NstUnshareIn, p.NstUnshareOut)
		}
		if kinds.Has(event.Setns) {
			pl.attach = append(pl.attach, p.NstSetnsIn, p.NstSetnsOut)
		}
	}
	pl.load = pl.attach
	return pl
}

// needsSyscalls: the namespace calls, which have fentry programs.
func needsSyscalls(kinds event.KindSet) bool {
	return kinds.Has(event.Clone) || kinds.Has(event.Unshare) || kinds.Has(event.Setns)
}

// needsRawSyscalls: calls only the raw syscall tracepoints catch, or the
// namespace calls where fentry is not used.
func needsRawSyscalls(opts Options, hooks Hooks) bool {
	k := opts.Kinds
	return opts.Failed || k.Has(event.UID) || k.Has(event.SID) || k.Has(event.Ptrace) ||
		(needsSyscalls(k) && hooks != HooksFentry)
}

// ValidBufferSize reports whether n can size the ring buffer.
func ValidBufferSize(n int) error {
	page := os.Getpagesize()
	if n < MinBufferSize || n < page || n&(n-1) != 0 {
		return fmt.Errorf("buffer size %d: must be a power of two of at least %d bytes", n, max(page, MinBufferSize))
	}
	if n > 1<<30 {
		return fmt.Errorf("buffer size %d: at most 1 GiB", n)
	}
	return nil
}

// checkKernel says in one line why this kernel or process cannot run the
// programs, or returns nil.
func checkKernel() error {
	release := kernelRelease()
	_, btfErr := os.Stat(BTFPath)
	if err := kernelGate(release, btfErr == nil, nil); err != nil {
		return err
	}
	// Checked as root too: root in a container has only the
	// capabilities it was given.
	if missing := MissingCapabilities(); len(missing) > 0 {
		need := "CAP_BPF and CAP_PERFMON"
		if NeedsMemlock() {
			need = "CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE"
		}
		return fmt.Errorf("permission denied: run nstrace as root, or with %s (missing: %s)", need, joinNames(missing))
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK, counted
	// per user: with another nstrace running, even the ring buffer probe
	// below fails (EPERM) under the default limit. Raise it first.
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raising the memlock limit: %w (kernels before 5.11 need CAP_SYS_RESOURCE)", err)
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return kernelGate(release, true, err)
		}
		return hint(fmt.Errorf("probing for the BPF ring buffer: %w", err))
	}
	return nil
}

// minKernel is the oldest Linux nstrace runs on: the BPF ring buffer
// came in 5.8.
var minKernel = [2]int{5, 8}

// kernelGate says in one line why a kernel cannot run nstrace, from its
// release (uname -r), whether it exposes BTF, and the ring buffer
// probe's answer (nil: present or not probed yet). The probe decides
// where it ran: distributions backport the ring buffer to older
// version numbers (RHEL 8's 4.18). The release only names the cause when
// BTF is missing too.
func kernelGate(release string, haveBTF bool, ringbuf error) error {
	tooOld := fmt.Errorf("kernel %s is too old: nstrace needs Linux %d.%d or newer (the BPF ring buffer)", release, minKernel[0], minKernel[1])
	if errors.Is(ringbuf, ebpf.ErrNotSupported) {
		return tooOld
	}
	if !haveBTF {
		if v, ok := parseRelease(release); ok && (v[0] < minKernel[0] || v[0] == minKernel[0] && v[1] < minKernel[1]) {
			return tooOld
		}
		return fmt.Errorf("kernel BTF not found at %s: nstrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y", BTFPath)
	}
	return nil
}

// parseRelease reads the major and minor version from a kernel release
// such as "5.10.0-32-cloud-amd64".
func parseRelease(release string) ([2]int, bool) {
	var v [2]int
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		return v, false
	}
	for i := range v {
		digits := parts[i]
		if end := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); end >= 0 {
			if i == 0 {
				return v, false // the major number is all digits
			}
			digits = digits[:end]
		}
		n, err := strconv.Atoi(digits)
		if err != nil {
			return v, false
		}
		v[i] = n
	}
	return v, true
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "(unknown)"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// Open checks the kernel, loads the programs the options need and attaches
// them. Events start queueing at once; Read returns them.
func Open(opts Options) (*Probe, error) {
	if opts.Kinds == 0 {
		return nil, errors.New("no events selected")
	}
	if opts.BufferSize == 0 {
		opts.BufferSize = DefaultBufferSize
	}
	if err := ValidBufferSize(opts.BufferSize); err != nil {
		return nil, err
	}
	if err := opts.checkCgroupV1(); err != nil {
		return nil, err
	}
	if (needsSyscalls(opts.Kinds) || needsRawSyscalls(opts, HooksTracepoint)) && !syscallHooksArch() {
		return nil, errors.New("system call events (clone, unshare, setns, uid, sid, ptrace, failed execs) are supported on x86_64 and arm64 only")
	}
	if err := checkKernel(); err != nil {
		return nil, err
	}
	hooks, note := HooksNone, "no clone, unshare or setns event selected"
	switch {
	case needsSyscalls(opts.Kinds):
		hooks, note = chooseHooks(opts.Hooks)
	case needsRawSyscalls(opts, HooksTracepoint):
		hooks = HooksTracepoint
		note = "uid, sid, ptrace and failed execs are caught only there; " + note
	}
	p, err := open(opts, hooks, note)
	if err != nil && hooks == HooksFentry && opts.Hooks == HooksAuto {
		// A kernel may take one fentry program and refuse another (a
		// function it lacks), or load them and refuse to attach them:
		// fall back as a whole.
		p, err = open(opts, HooksTracepoint, fmt.Sprintf("fentry failed: %v", err))
	}
	if err != nil && hooks == HooksFentry && opts.Hooks == HooksFentry {
		// The capabilities were checked: a refusal here is the kernel's
		// answer to BPF trampolines, not the permission hint's.
		if ferr := FentryAllowed(); ferr != nil {
			return nil, fmt.Errorf("--syscall-hooks fentry: this kernel refuses BPF trampolines (%v): use --syscall-hooks auto or tracepoint", ferr)
		}
	}
	return p, err
}

// open loads and attaches the programs for opts with these hooks.
func open(opts Options, hooks Hooks, note string) (_ *Probe, err error) {
	p := &Probe{hooks: hooks, hooksNote: note}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	exitGroupDead := exitTracepointHasGroupDead() && !opts.ClaimExits
	var attach []*ebpf.ProgramSpec
	var ms *nstraceMapSpecs
	p.coll, attach, ms, err = load(opts, p.hooks, exitGroupDead)
	if err != nil {
		return nil, loadError(err, opts.Debug)
	}
	m := func(s *ebpf.MapSpec) *ebpf.Map { return p.coll.Maps[s.Name] }
	p.maps = loadedMaps{m(ms.Events), m(ms.Traced), m(ms.NsFilter), m(ms.CgroupFilter), m(ms.CgroupsSent), m(ms.Pending), m(ms.CloneFlags)}
	if err := p.coll.Assign(&p.vars); err != nil {
		return nil, fmt.Errorf("reading the loaded variables: %w", err)
	}
	p.exitProg = "sched_process_exit (last thread by signal->live, claimed once)"
	if exitGroupDead {
		p.exitProg = "sched_process_exit (group_dead)"
	}

	for _, pid := range opts.Filter.PIDs {
		if err := p.Track(pid); err != nil {
			return nil, err
		}
	}
	if opts.Limits.Full {
		if err := p.fill(); err != nil {
			return nil, err
		}
	}
	for _, r := range opts.Filter.Namespaces {
		if err := p.maps.nsFilter.Update(uint32(r.Inode), uint32(r.Types), ebpf.UpdateAny); err != nil {
			return nil, fmt.Errorf("setting the namespace filter: %w", err)
		}
	}
	for _, key := range opts.Filter.cgroupKeys() {
		if err := p.maps.cgroupFilter.Update(key, uint8(1), ebpf.UpdateAny); err != nil {
			return nil, fmt.Errorf("setting the cgroup filter: %w", err)
		}
	}
	p.cgroupFiltered = len(opts.Filter.cgroupKeys()) > 0
	p.dec.forget = p.forgetCgroups
	p.dec.cgroupV1 = opts.CgroupV1
	p.ring, err = newRing(p.maps.events.FD(), int(p.maps.events.MaxEntries()))
	if err != nil {
		return nil, hint(fmt.Errorf("opening the ring buffer: %w", err))
	}
	for _, ps := range attach {
		l, err := link.AttachTracing(link.TracingOptions{Program: p.coll.Programs[ps.Name]})
		if err != nil {
			return nil, hint(fmt.Errorf("attaching %s (%s): %w", ps.Name, ps.AttachTo, err))
		}
		p.links = append(p.links, l)
	}
	return p, nil
}

// load prepares the embedded object for the options and loads it; it
// returns the programs to attach and the maps' specs.
func load(opts Options, hooks Hooks, exitGroupDead bool) (*ebpf.Collection, []*ebpf.ProgramSpec, *nstraceMapSpecs, error) {
	spec, err := loadNstrace()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	var specs nstraceSpecs
	if err := spec.Assign(&specs); err != nil {
		return nil, nil, nil, fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	specs.NstSetnsIn.AttachTo = setnsWrapper
	specs.NstSetnsOut.AttachTo = setnsWrapper
	pl := programsFor(&specs.nstraceProgramSpecs, opts, hooks, exitGroupDead)
	keepOnly(spec, pl.load)
	if err := configure(&specs, opts, hooks == HooksFentry); err != nil {
		return nil, nil, nil, err
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{})
	return coll, pl.attach, &specs.nstraceMapSpecs, err
}

// keepOnly strips spec down to these programs and the maps they use.
func keepOnly(spec *ebpf.CollectionSpec, progs []*ebpf.ProgramSpec) {
	keep := map[*ebpf.ProgramSpec]bool{}
	used := map[string]bool{}
	for _, ps := range progs {
		keep[ps] = true
		for _, ins := range ps.Instructions {
			if ref := ins.Reference(); ref != "" {
				used[ref] = true
			}
		}
	}
	for name, ps := range spec.Programs {
		if !keep[ps] {
			delete(spec.Programs, name)
		}
	}
	for name, m := range spec.Maps {
		// The variables' sections stay: the loader sets and reads them.
		if !used[name] && !isDataSection(m.Name) {
			delete(spec.Maps, name)
		}
	}
}

func isDataSection(name string) bool {
	return name == ".bss" || name == ".data" || name == ".rodata" || strings.HasPrefix(name, ".rodata.") || strings.HasPrefix(name, ".data.")
}

// chooseHooks picks how the namespace system calls are caught, and says
// why.
func chooseHooks(want Hooks) (Hooks, string) {
	switch want {
	case HooksFentry:
		return HooksFentry, "asked for (--syscall-hooks fentry)"
	case HooksTracepoint:
		return HooksTracepoint, "asked for (--syscall-hooks tracepoint)"
	}
	if err := FentryAllowed(); err != nil {
		return HooksTracepoint, fmt.Sprintf("this kernel refuses BPF trampolines (%v)", err)
	}
	return HooksFentry, "this kernel allows BPF trampolines"
}

// FentryAllowed reports whether this kernel lets BPF trampolines attach,
// by loading and attaching a program that does nothing at a function
// entry.
func FentryAllowed() error {
	// Before 5.11 a load can fail for the memory lock limit alone.
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raising the memlock limit: %w", err)
	}
	spec, err := loadNstrace()
	if err != nil {
		return err
	}
	var specs nstraceProgramSpecs
	if err := spec.Assign(&specs); err != nil {
		return err
	}
	prog, err := ebpf.NewProgram(specs.NstFentryOk)
	if errors.Is(err, unix.EPERM) {
		// Not the memory lock limit, which the library's message
		// suggests: it was lifted above.
		return errors.New("loading a fentry program: operation not permitted")
	}
	if err != nil {
		return err
	}
	defer prog.Close()
	// Loading is not enough: arm64 before 6.4 loads fentry programs but
	// cannot attach them to kernel functions (no ftrace direct calls).
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		return err
	}
	return l.Close()
}

// exitTracepointHasGroupDead reports whether sched_process_exit says which
// thread's exit ended its group (Linux 6.16).
func exitTracepointHasGroupDead() bool {
	kspec, err := btf.LoadKernelSpec()
	if err != nil {
		return false
	}
	var td *btf.Typedef
	if err := kspec.TypeByName("btf_trace_sched_process_exit", &td); err != nil {
		return false
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return false
	}
	proto, ok := ptr.Target.(*btf.FuncProto)
	return ok && len(proto.Params) >= 3
}

// runHostNS runs the host namespace program once and reads its answer.
func runHostNS(coll *ebpf.Collection) (nstraceHostNs, bool) {
	var h nstraceHostNs
	var vars nstraceVariables
	prog := coll.Programs["nst_host_ns"]
	if prog == nil || coll.Assign(&vars) != nil {
		return h, false
	}
	if _, err := prog.Run(&ebpf.RunOptions{Context: []uint64{0}}); err != nil {
		return h, false
	}
	if err := vars.NstHost.Get(&h); err != nil || h.Found == 0 {
		return nstraceHostNs{}, false
	}
	return h, true
}

// hostKnown is what the kernel says of the host's namespaces (those of its
// first task) and of the objects that hold them, asked once.
var hostKnown = sync.OnceValues(readHost)

// readHost loads only what it takes to ask.
func readHost() (nstraceHostNs, error) {
	if err := checkKernel(); err != nil {
		return nstraceHostNs{}, err
	}
	spec, err := loadNstrace()
	if err != nil {
		return nstraceHostNs{}, err
	}
	var specs nstraceProgramSpecs
	if err := spec.Assign(&specs); err != nil {
		return nstraceHostNs{}, err
	}
	keepOnly(spec, []*ebpf.ProgramSpec{specs.NstHostNs})
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{})
	if err != nil {
		return nstraceHostNs{}, loadError(err, false)
	}
	defer coll.Close()
	h, ok := runHostNS(coll)
	if !ok {
		return h, errors.New("the kernel did not say which namespaces are the host's")
	}
	return h, nil
}

// HostNamespaces reads the host's namespaces from the kernel (those of its
// first task), wherever nstrace runs.
func HostNamespaces() (ns.Set, error) {
	var set ns.Set
	h, err := hostKnown()
	if err != nil {
		return set, err
	}
	for i, v := range h.Ns {
		set[i] = uint64(v)
	}
	return set, nil
}

// configure sizes the maps and sets the programs' load-time options.
func configure(s *nstraceSpecs, opts Options, fentry bool) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("counting CPUs: %w", err)
	}
	s.ExecHeap.MaxEntries = uint32(cpus)
	s.Events.MaxEntries = uint32(opts.BufferSize)
	for _, l := range []struct {
		m *ebpf.MapSpec
		n int
	}{{s.Traced, opts.Limits.Tracked}, {s.Pending, opts.Limits.Pending}, {s.CloneFlags, opts.Limits.CloneFlags}} {
		if l.n > 0 {
			l.m.MaxEntries = uint32(l.n)
		}
	}
	k, f := opts.Kinds, opts.Filter
	v := &s.nstraceVariableSpecs
	if err := setAll([]varSetting{
		{v.NstWantFork, b2u(k.Has(event.Fork))},
		{v.NstWantExec, b2u(k.Has(event.Exec))},
		{v.NstWantExit, b2u(k.NeedsExit())},
		{v.NstWantComm, b2u(k.Has(event.Comm))},
		{v.NstWantUid, b2u(k.Has(event.UID))},
		{v.NstWantSid, b2u(k.Has(event.SID))},
		{v.NstWantPtrace, b2u(k.Has(event.Ptrace))},
		{v.NstWantFailed, b2u(opts.Failed)},
		{v.NstAncestors, b2u(opts.Ancestors)},
		{v.NstWantClone, b2u(k.Has(event.Clone))},
		{v.NstWantUnshare, b2u(k.Has(event.Unshare))},
		{v.NstWantSetns, b2u(k.Has(event.Setns))},
		{v.NstFilterPids, b2u(f.Tracked)},
		{v.NstFollow, b2u(f.Follow)},
		{v.NstFilterNs, b2u(len(f.Namespaces) > 0)},
		{v.NstFilterCgroup, b2u(len(f.cgroupKeys()) > 0)},
	}); err != nil {
		return err
	}
	v1, err := cgroupV1ID(opts.CgroupV1)
	if err != nil {
		return err
	}
	if err := v.NstCgroupV1.Set(uint32(v1)); err != nil {
		return fmt.Errorf("setting the cgroup v1 controller: %w", err)
	}
	if err := v.NstCgroupV1Hierarchy.Set(int32(opts.CgroupV1Hierarchy)); err != nil {
		return fmt.Errorf("setting the cgroup v1 hierarchy: %w", err)
	}
	// Without the host's objects, every task's namespaces are read.
	if known, err := hostKnown(); err == nil {
		if err := v.NstKnown.Set(known); err != nil {
			return fmt.Errorf("setting the host's namespaces: %w", err)
		}
	}
	return setSyscallClasses(v, opts, fentry)
}

type varSetting struct {
	v   *ebpf.VariableSpec
	val any
}

func setAll(settings []varSetting) error {
	for _, s := range settings {
		if err := s.v.Set(s.val); err != nil {
			return fmt.Errorf("setting %v: %w", s.v, err)
		}
	}
	return nil
}

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

func hint(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w (run as root, or with CAP_BPF and CAP_PERFMON)", err)
	}
	return err
}

func loadError(err error, debug bool) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		if debug {
			return fmt.Errorf("loading BPF programs: the verifier rejected them:\n%+v", ve)
		}
		return fmt.Errorf("loading BPF programs: the verifier rejected them: %v (full log with --debug)", ve)
	}
	return hint(fmt.Errorf("loading BPF programs: %w", err))
}

// fill fills the pending and clone-flags tables with entries for threads
// that cannot exist (ids above the kernel's pid limit).
func (p *Probe) fill() error {
	for _, m := range []*ebpf.Map{p.maps.pending, p.maps.cloneFlags} {
		if m == nil {
			continue
		}
		value := make([]byte, m.ValueSize())
		for i := uint32(0); i < m.MaxEntries(); i++ {
			if err := m.Update(^i, value, ebpf.UpdateNoExist); err != nil {
				return fmt.Errorf("filling %v: %w", m, err)
			}
		}
	}
	return nil
}

// Hooks reports how the namespace system calls are caught, and why.
func (p *Probe) Hooks() (Hooks, string) { return p.hooks, p.hooksNote }

// ExitHook says how the last thread of a process is recognised.
func (p *Probe) ExitHook() string { return p.exitProg }

// Track adds a process to the traced set (with Filter.Tracked).
func (p *Probe) Track(pid uint32) error {
	if p.maps.traced == nil {
		return errors.New("tracking a process needs a traced set (Filter.Tracked)")
	}
	if err := p.maps.traced.Update(pid, uint8(1), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("tracing pid %d: %w", pid, err)
	}
	return nil
}

// FilterCgroup adds a cgroup (a v2 id, or with v1 an id in the v1
// hierarchy of Options.CgroupV1) to a cgroup filter the probe was opened
// with (Filter.Cgroups, CgroupsV1): its processes, and those below it,
// are reported from now on.
func (p *Probe) FilterCgroup(id uint64, v1 bool) error {
	if !p.cgroupFiltered {
		return errors.New("adding a cgroup to the filter: the probe filters on no cgroup")
	}
	if v1 && p.dec.cgroupV1 == "" {
		return errors.New("adding a cgroup v1 cgroup to the filter: the probe reads no cgroup v1 controller's")
	}
	key := id
	if v1 {
		key |= cgroupV1Key
	}
	if err := p.maps.cgroupFilter.Update(key, uint8(1), ebpf.UpdateAny); err != nil {
		if errors.Is(err, unix.E2BIG) {
			err = fmt.Errorf("the filter holds %d cgroups, its most", p.maps.cgroupFilter.MaxEntries())
		}
		return fmt.Errorf("adding cgroup %d to the filter: %w", id, err)
	}
	return nil
}

// Pending reports how many bytes of records wait in the ring buffer.
func (p *Probe) Pending() int { return p.ring.available() }

// BufferSize is the ring buffer's size in bytes.
func (p *Probe) BufferSize() int { return int(p.ring.size) }

// Read waits for the next event and decodes it into e. It tells the
// kernel side that the reader sleeps, so the first new record wakes it;
// records otherwise wake nobody, and a reader that is not waiting reads
// them with Next.
func (p *Probe) Read(e *event.Event) error {
	for {
		if err := p.Next(e); err != ErrEmpty {
			return err
		}
		p.ring.drained(time.Now())
		if err := p.vars.NstReaderWaiting.Set(uint32(1)); err != nil {
			return fmt.Errorf("telling the kernel side the reader waits: %w", err)
		}
		// A full fence: the flag is out before the ring is looked at.
		// A record queued before the flag was set woke nobody, and is
		// found by the look; one queued after finds the flag set and
		// wakes the wait.
		atomic.AddUint64(&p.fence, 0)
		// After Flush, Next drains what is queued before it says so.
		if err := p.ring.wait(func() bool { return p.ring.available() > 0 }); err != nil && err != ErrFlushed {
			return err
		}
	}
}

// Rest sleeps while records gather, without a timer of the Go runtime's
// (see restTimer): for most, or less when records come in fast enough to
// fill a quarter of the ring buffer sooner (at the last batch's rate).
func (p *Probe) Rest(most time.Duration) error { return p.ring.restAfterBatch(most) }

// Next decodes the next queued event into e without waiting: ErrEmpty if
// there is none. The event's byte slices are valid until the next call.
func (p *Probe) Next(e *event.Event) error {
	for {
		if p.ring.closed.Load() {
			return ErrClosed
		}
		raw, err := p.ring.next()
		if err != nil {
			if err := p.ring.stopped(); err != nil {
				return err
			}
			return ErrEmpty
		}
		if err := p.dec.Decode(raw, e); err != errNotEvent {
			return err
		}
	}
}

// forgetCgroups tells the kernel side the decoder dropped these cgroups'
// names: it sends them again when it next sees them. Each CPU's recent
// cgroups, taken as sent without a look in cgroups_sent, are emptied
// too (in shared memory: no system call); a program that found one of
// these ids in cgroups_sent just before its removal may still note it
// there as recent, until eight other cgroups push it out.
func (p *Probe) forgetCgroups(ids []uint64) {
	for _, id := range ids {
		_ = p.maps.cgroupsSent.Delete(id)
	}
	if v := p.vars.NstRecentCgroups; v != nil {
		_ = v.Set(make([]byte, v.Size()))
	}
}

// Flush makes Read return every record queued now, then ErrFlushed; safe
// to call from another goroutine.
func (p *Probe) Flush() error {
	p.ring.interrupt(false)
	return nil
}

// LostSince reports whether the kernel has failed to deliver anything
// since the record Read last returned (or, with no record since, since the
// last call). Read from memory shared with the kernel: no system call.
func (p *Probe) LostSince() bool {
	var seq uint64
	if p.vars.NstLostSeq == nil || p.vars.NstLostSeq.Get(&seq) != nil {
		return false
	}
	return p.dec.seenLoss(seq)
}

// LostRecordSeen reports whether the last record read says events were
// lost before it.
func (p *Probe) LostRecordSeen() bool { return p.dec.lossBefore }

// Losses returns the kernel's counts of events it could not deliver, by
// reason, since the probe opened.
func (p *Probe) Losses() (Losses, error) {
	var l Losses
	if err := p.vars.NstLost.Get(&l); err != nil {
		return l, fmt.Errorf("reading the lost-event counters: %w", err)
	}
	return l, nil
}

// Interrupt makes a blocked Read return ErrClosed; safe to call from
// another goroutine.
func (p *Probe) Interrupt() error {
	if p.ring == nil {
		return nil
	}
	p.ring.interrupt(true)
	return nil
}

// Close detaches and unloads everything.
func (p *Probe) Close() error {
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	p.links = nil
	if p.ring != nil {
		errs = append(errs, p.ring.close())
	}
	if p.coll != nil {
		p.coll.Close()
		p.coll = nil
	}
	return errors.Join(errs...)
}

// ObjectSHA256 is the hex sha256 of the embedded BPF object.
func ObjectSHA256() string {
	sum := sha256.Sum256(_NstraceBytes)
	return hex.EncodeToString(sum[:])
}
