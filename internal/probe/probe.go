// SPDX-License-Identifier: Apache-2.0

// Package probe loads nstrace's BPF programs, attaches the ones the chosen
// events need, and reads their records from the ring buffer.
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

// Options choose what the probe traces.
type Options struct {
	Kinds      event.KindSet
	BufferSize int // bytes, a power of two multiple of the page size
	Debug      bool

	// FilterPIDs reports only processes in the traced set: PIDs, and the
	// ones added later with Trace. Follow adds every child of a traced
	// process to the set as it is born, in the kernel.
	FilterPIDs bool
	PIDs       []uint32
	Follow     bool
	// NS, if not empty, reports only processes with one of these
	// namespaces: inode to the types it counts for (see NSTypeMask).
	NS map[uint32]uint32
}

// NSTypeMask is the NS filter mask for one namespace type.
func NSTypeMask(t event.NSType) uint32 { return 1 << t }

// AnyNSType is the NS filter mask that matches an inode as any type.
const AnyNSType = 1<<event.NSCount - 1

// Probe is a loaded and attached set of nstrace programs.
type Probe struct {
	coll    *ebpf.Collection
	links   []link.Link
	rd      *ringbuf.Reader
	lost    *ebpf.Map
	traced  *ebpf.Map
	lostSum uint64
	rec     ringbuf.Record
	dec     Decoder
}

// BTFPath is where the running kernel exposes its type information.
var BTFPath = "/sys/kernel/btf/vmlinux"

// Programs to attach for each kind. fork and clone share the fork
// tracepoint; clone, unshare and setns are seen at syscall entry and exit.
// Following a process tree needs the fork and exit tracepoints whatever the
// kinds shown: they keep the traced set.
func programsFor(opts Options) []string {
	kinds := opts.Kinds
	var names []string
	if kinds.Has(event.Fork) || kinds.Has(event.Clone) || (opts.FilterPIDs && opts.Follow) {
		names = append(names, "nst_fork")
	}
	if kinds.Has(event.Exec) {
		names = append(names, "nst_exec")
	}
	if kinds.Has(event.Exit) || opts.FilterPIDs {
		names = append(names, "nst_exit")
	}
	if kinds.Has(event.Clone) || kinds.Has(event.Unshare) || kinds.Has(event.Setns) {
		names = append(names, "nst_sys_enter", "nst_sys_exit")
	}
	return names
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

// Open checks the kernel, loads the programs the options need and attaches
// them. Events start queueing at once; Read returns them.
func Open(opts Options) (_ *Probe, err error) {
	if opts.BufferSize == 0 {
		opts.BufferSize = DefaultBufferSize
	}
	if err := ValidBufferSize(opts.BufferSize); err != nil {
		return nil, err
	}
	if _, err := os.Stat(BTFPath); err != nil {
		return nil, fmt.Errorf("kernel BTF not found at %s: nstrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y", BTFPath)
	}
	if os.Geteuid() != 0 && !hasBPFCaps() {
		return nil, errors.New("permission denied: run nstrace as root, or with CAP_BPF and CAP_PERFMON (and CAP_SYS_RESOURCE on kernels before 5.11)")
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return nil, errors.New("kernel too old: nstrace needs the BPF ring buffer of Linux 5.8 or newer")
		}
		return nil, hint(fmt.Errorf("probing for the BPF ring buffer: %w", err))
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, hint(fmt.Errorf("raising the memlock limit: %w", err))
	}

	spec, err := loadNstrace()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	want := programsFor(opts)
	if opts.Kinds == 0 {
		return nil, errors.New("no events selected")
	}
	keep := map[string]bool{}
	for _, n := range want {
		keep[n] = true
	}
	for name := range spec.Programs {
		if !keep[name] {
			delete(spec.Programs, name)
		}
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("counting CPUs: %w", err)
	}
	spec.Maps["exec_heap"].MaxEntries = uint32(cpus)
	spec.Maps["events"].MaxEntries = uint32(opts.BufferSize)

	// An eighth of the buffer queued wakes the reader at once; less waits
	// for its poll, or wakes it if it was idle (see wakeup_flags).
	wakeup := opts.BufferSize / 8
	vars := map[string]any{
		"nst_want_fork":    b2u(opts.Kinds.Has(event.Fork)),
		"nst_want_exec":    b2u(opts.Kinds.Has(event.Exec)),
		"nst_want_exit":    b2u(opts.Kinds.Has(event.Exit)),
		"nst_filter_pids":  b2u(opts.FilterPIDs),
		"nst_follow":       b2u(opts.Follow),
		"nst_filter_ns":    b2u(len(opts.NS) > 0),
		"nst_want_clone":   b2u(opts.Kinds.Has(event.Clone)),
		"nst_want_unshare": b2u(opts.Kinds.Has(event.Unshare)),
		"nst_want_setns":   b2u(opts.Kinds.Has(event.Setns)),
		"nst_wakeup_bytes": uint32(wakeup),
	}
	for name, nr := range syscallNumbers {
		vars[name] = nr
	}
	if err := setVars(spec, vars); err != nil {
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
	p.lost = p.coll.Maps["lost"]
	p.traced = p.coll.Maps["traced"]
	for _, pid := range opts.PIDs {
		if err := p.Trace(pid); err != nil {
			return nil, err
		}
	}
	for ino, mask := range opts.NS {
		if err := p.coll.Maps["ns_filter"].Put(ino, mask); err != nil {
			return nil, fmt.Errorf("setting the namespace filter: %w", err)
		}
	}
	p.rd, err = ringbuf.NewReader(p.coll.Maps["events"])
	if err != nil {
		return nil, hint(fmt.Errorf("opening the ring buffer: %w", err))
	}
	for _, name := range want {
		l, err := link.AttachTracing(link.TracingOptions{Program: p.coll.Programs[name]})
		if err != nil {
			return nil, hint(fmt.Errorf("attaching %s (%s): %w", name, spec.Programs[name].AttachTo, err))
		}
		p.links = append(p.links, l)
	}
	p.dec.WallOffset = wallOffset()
	return p, nil
}

func setVars(spec *ebpf.CollectionSpec, vars map[string]any) error {
	for name, v := range vars {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("BPF object lacks variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
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

// Trace adds a process to the traced set (with FilterPIDs).
func (p *Probe) Trace(pid uint32) error {
	if err := p.traced.Put(pid, uint8(1)); err != nil {
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
// when the deadline passes and ringbuf.ErrClosed after Close.
func (p *Probe) Read(e *event.Event) error {
	if err := p.rd.ReadInto(&p.rec); err != nil {
		return err
	}
	return p.dec.Decode(p.rec.RawSample, e)
}

// Lost returns how many events the kernel failed to queue since the last
// call.
func (p *Probe) Lost() (uint64, error) {
	var per []uint64
	if err := p.lost.Lookup(uint32(0), &per); err != nil {
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

// Interrupt makes a blocked Read return ringbuf.ErrClosed; safe to call
// from another goroutine.
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
