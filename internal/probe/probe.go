// SPDX-License-Identifier: Apache-2.0

// Package probe loads nstrace's BPF programs, attaches the ones the chosen
// events need, and reads their records from the ring buffer. It is the
// only package that speaks to the kernel's BPF interface.
package probe

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/nstrace/nstrace/internal/event"
	"github.com/nstrace/nstrace/internal/ns"
)

// DefaultBufferSize is the ring buffer's default size: enough to absorb a
// burst of thousands of execs while the reader catches up. Its pages are
// mapped twice into nstrace and count twice in its RSS.
const DefaultBufferSize = 4 << 20

// MinBufferSize is the smallest ring buffer nstrace accepts.
const MinBufferSize = 4096

// PollInterval bounds how long a queued event waits before it is read: the
// kernel side wakes the reader only in batches, so the reader also looks on
// this timer.
const PollInterval = 50 * time.Millisecond

// Errors Read returns besides decoding errors and os.ErrDeadlineExceeded.
var (
	// ErrClosed: Interrupt or Close was called.
	ErrClosed = errors.New("probe closed")
)

// Options choose what the probe traces.
type Options struct {
	Kinds      event.KindSet
	BufferSize int // bytes, a power of two multiple of the page size
	Debug      bool
	Filter     Filter
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
}

// NSRef is a namespace inode and the types under which it counts.
type NSRef struct {
	Inode uint64
	Types ns.Mask
}

// Probe is a loaded and attached set of nstrace programs.
type Probe struct {
	coll    *ebpf.Collection
	maps    nstraceMaps
	links   []link.Link
	rd      *ringbuf.Reader
	lostSum uint64
	rec     ringbuf.Record
	dec     Decoder
}

// BTFPath is where the running kernel exposes its type information.
var BTFPath = "/sys/kernel/btf/vmlinux"

// programsFor lists the programs the options need. fork and clone share
// the fork tracepoint; clone, unshare and setns are seen at syscall entry
// and exit. Following a process tree needs the fork and exit tracepoints
// whatever the kinds shown: they keep the traced set.
func programsFor(p *nstraceProgramSpecs, opts Options) []*ebpf.ProgramSpec {
	kinds, f := opts.Kinds, opts.Filter
	var out []*ebpf.ProgramSpec
	if kinds.Has(event.Fork) || kinds.Has(event.Clone) || (f.Tracked && f.Follow) {
		out = append(out, p.NstFork)
	}
	if kinds.Has(event.Exec) {
		out = append(out, p.NstExec)
	}
	if kinds.Has(event.Exit) || f.Tracked {
		out = append(out, p.NstExit)
	}
	if needsSyscalls(kinds) {
		out = append(out, p.NstSysEnter, p.NstSysExit)
	}
	return out
}

func needsSyscalls(kinds event.KindSet) bool {
	return kinds.Has(event.Clone) || kinds.Has(event.Unshare) || kinds.Has(event.Setns)
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
	if _, err := os.Stat(BTFPath); err != nil {
		return fmt.Errorf("kernel BTF not found at %s: nstrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y", BTFPath)
	}
	if os.Geteuid() != 0 && !hasBPFCaps() {
		return errors.New("permission denied: run nstrace as root, or with CAP_BPF and CAP_PERFMON (and CAP_SYS_RESOURCE on kernels before 5.11)")
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return errors.New("kernel too old: nstrace needs the BPF ring buffer of Linux 5.8 or newer")
		}
		return hint(fmt.Errorf("probing for the BPF ring buffer: %w", err))
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return hint(fmt.Errorf("raising the memlock limit: %w", err))
	}
	return nil
}

// Open checks the kernel, loads the programs the options need and attaches
// them. Events start queueing at once; Read returns them.
func Open(opts Options) (_ *Probe, err error) {
	if opts.Kinds == 0 {
		return nil, errors.New("no events selected")
	}
	if opts.BufferSize == 0 {
		opts.BufferSize = DefaultBufferSize
	}
	if err := ValidBufferSize(opts.BufferSize); err != nil {
		return nil, err
	}
	if needsSyscalls(opts.Kinds) && !syscallHooksArch() {
		return nil, errors.New("clone, unshare and setns events are supported on x86_64 and arm64 only")
	}
	if err := checkKernel(); err != nil {
		return nil, err
	}

	spec, err := loadNstrace()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	var specs nstraceSpecs
	if err := spec.Assign(&specs); err != nil {
		return nil, fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	want := programsFor(&specs.nstraceProgramSpecs, opts)
	keep := map[*ebpf.ProgramSpec]bool{}
	for _, p := range want {
		keep[p] = true
	}
	for name, p := range spec.Programs {
		if !keep[p] {
			delete(spec.Programs, name)
		}
	}
	if err := configure(&specs, opts); err != nil {
		return nil, err
	}

	p := &Probe{}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	p.coll, err = ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{})
	if err != nil {
		return nil, loadError(err, opts.Debug)
	}
	if err := p.coll.Assign(&p.maps); err != nil {
		return nil, fmt.Errorf("reading the loaded maps: %w", err)
	}
	for _, pid := range opts.Filter.PIDs {
		if err := p.Track(pid); err != nil {
			return nil, err
		}
	}
	for _, r := range opts.Filter.Namespaces {
		if err := p.maps.NsFilter.Update(uint32(r.Inode), uint32(r.Types), ebpf.UpdateAny); err != nil {
			return nil, fmt.Errorf("setting the namespace filter: %w", err)
		}
	}
	p.rd, err = ringbuf.NewReader(p.maps.Events)
	if err != nil {
		return nil, hint(fmt.Errorf("opening the ring buffer: %w", err))
	}
	for _, ps := range want {
		l, err := link.AttachTracing(link.TracingOptions{Program: p.coll.Programs[ps.Name]})
		if err != nil {
			return nil, hint(fmt.Errorf("attaching %s (%s): %w", ps.Name, ps.AttachTo, err))
		}
		p.links = append(p.links, l)
	}
	p.dec.WallOffset = wallOffset()
	return p, nil
}

// configure sizes the maps and sets the programs' load-time options.
func configure(s *nstraceSpecs, opts Options) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("counting CPUs: %w", err)
	}
	s.ExecHeap.MaxEntries = uint32(cpus)
	s.Events.MaxEntries = uint32(opts.BufferSize)
	k, f := opts.Kinds, opts.Filter
	v := &s.nstraceVariableSpecs
	// An eighth of the buffer queued wakes the reader at once; less waits
	// for its poll, or wakes it if it was idle (see wakeup_flags).
	if err := setAll([]varSetting{
		{v.NstWantFork, b2u(k.Has(event.Fork))},
		{v.NstWantExec, b2u(k.Has(event.Exec))},
		{v.NstWantExit, b2u(k.Has(event.Exit))},
		{v.NstWantClone, b2u(k.Has(event.Clone))},
		{v.NstWantUnshare, b2u(k.Has(event.Unshare))},
		{v.NstWantSetns, b2u(k.Has(event.Setns))},
		{v.NstFilterPids, b2u(f.Tracked)},
		{v.NstFollow, b2u(f.Follow)},
		{v.NstFilterNs, b2u(len(f.Namespaces) > 0)},
		{v.NstWakeupBytes, uint32(opts.BufferSize / 8)},
	}); err != nil {
		return err
	}
	return setSyscallNumbers(v)
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

// wallOffset is what to add to a CLOCK_MONOTONIC stamp to get wall time.
func wallOffset() time.Duration {
	var mono, real unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
	_ = unix.ClockGettime(unix.CLOCK_REALTIME, &real)
	return time.Duration(real.Nano() - mono.Nano())
}

// hasBPFCaps reports whether the process holds CAP_BPF and CAP_PERFMON.
func hasBPFCaps() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	return has(unix.CAP_BPF) && has(unix.CAP_PERFMON)
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

// Track adds a process to the traced set (with Filter.Tracked).
func (p *Probe) Track(pid uint32) error {
	if err := p.maps.Traced.Update(pid, uint8(1), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("tracing pid %d: %w", pid, err)
	}
	return nil
}

// SetDeadline bounds the next Read.
func (p *Probe) SetDeadline(t time.Time) { p.rd.SetDeadline(t) }

// Pending reports how many bytes of records wait in the ring buffer.
func (p *Probe) Pending() int { return p.rd.AvailableBytes() }

// Read waits for the next record and decodes it into e. The event's byte
// slices are valid until the next Read. It returns os.ErrDeadlineExceeded
// when the deadline passes and ErrClosed after Interrupt or Close.
func (p *Probe) Read(e *event.Event) error {
	if err := p.rd.ReadInto(&p.rec); err != nil {
		if errors.Is(err, ringbuf.ErrClosed) {
			return ErrClosed
		}
		return err
	}
	return p.dec.Decode(p.rec.RawSample, e)
}

// Lost returns how many events the kernel failed to queue since the last
// call.
func (p *Probe) Lost() (uint64, error) {
	var per []uint64
	if err := p.maps.Lost.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("reading the lost-event counters: %w", err)
	}
	var sum uint64
	for _, v := range per {
		sum += v
	}
	d := sum - p.lostSum
	p.lostSum = sum
	return d, nil
}

// Interrupt makes a blocked Read return ErrClosed; safe to call from
// another goroutine.
func (p *Probe) Interrupt() error {
	if p.rd == nil {
		return nil
	}
	return p.rd.Close()
}

// Close detaches and unloads everything.
func (p *Probe) Close() error {
	var errs []error
	for _, l := range p.links {
		errs = append(errs, l.Close())
	}
	p.links = nil
	if p.rd != nil {
		errs = append(errs, p.rd.Close())
	}
	if p.coll != nil {
		p.coll.Close()
		p.coll = nil
	}
	return errors.Join(errs...)
}
