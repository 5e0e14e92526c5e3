// SPDX-License-Identifier: Apache-2.0

package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
)

// floors is what the storms cost programs that do (almost) nothing on the
// hooks nstrace uses: the floor under any tracer's figure on this host.
type floors struct {
	empty map[string]float64 // ns per run of an empty program, by hook
	ring  float64            // ns per run: an 8-byte ring buffer record, on sched_process_exec
	user  float64            // ns per run: one 8-byte read of user memory there
	clock float64            // ns per run: one read of CLOCK_BOOTTIME there
}

// floorHooks are the tracepoints nstrace's programs run on.
var floorHooks = []string{"sched_process_fork", "sched_process_exec", "sched_process_exit", "sys_enter", "sys_exit"}

// floorTable: ns per run, under the same storms as the kernel table, of
// an empty program on each hook; of one that only queues an 8-byte ring
// buffer record (reserve and submit, read by a reader that rests 25 ms
// between batches); and of one that only reads 8 bytes of the new image's
// arguments from user memory, as an exec program must; and of one that
// only reads the clock every event's time comes from.
func floorTable() {
	fmt.Printf("floor: the same %d-exec storms under programs that do (almost) nothing, bpf_stats, median of %d:\n", *n, kernelStorms)
	f, err := measureFloors()
	if err != nil {
		fmt.Printf("floor skipped: %v\n", err)
		return
	}
	for _, h := range floorHooks {
		fmt.Printf("  %-58s %6.0f ns\n", "an empty program on "+h, f.empty[h])
	}
	fmt.Printf("  %-58s %6.0f ns\n", "sched_process_exec: an 8-byte ring buffer record", f.ring)
	fmt.Printf("  %-58s %6.0f ns\n", "sched_process_exec: an 8-byte read of user memory (argv)", f.user)
	fmt.Printf("  %-58s %6.0f ns\n", "sched_process_exec: a CLOCK_BOOTTIME timestamp", f.clock)
	results.floor = f
}

func measureFloors() (*floors, error) {
	f := &floors{}
	empties := map[string]*ebpf.Program{}
	for _, h := range floorHooks {
		p, err := tracingProgram("floor_empty", h, asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()})
		if err != nil {
			return nil, err
		}
		defer p.Close()
		empties[h] = p
	}
	var err error
	if f.empty, err = floorRuns(empties); err != nil {
		return nil, err
	}

	events, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.RingBuf, MaxEntries: 4 << 20})
	if err != nil {
		return nil, fmt.Errorf("ring buffer: %w", err)
	}
	defer events.Close()
	rd, err := ringbuf.NewReader(events)
	if err != nil {
		return nil, fmt.Errorf("ring buffer reader: %w", err)
	}
	defer rd.Close()
	go func() {
		var rec ringbuf.Record
		for {
			rd.SetDeadline(time.Now())
			for {
				err := rd.ReadInto(&rec)
				if errors.Is(err, ringbuf.ErrClosed) {
					return
				}
				if err != nil {
					break
				}
			}
			time.Sleep(25 * time.Millisecond)
		}
	}()
	if f.ring, err = execFloor("floor_ring", asm.Instructions{
		asm.LoadMapPtr(asm.R1, events.FD()),
		asm.Mov.Imm(asm.R2, 8),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnRingbufReserve.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R2, 0),
		asm.StoreMem(asm.R0, 0, asm.R2, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.Mov.Imm(asm.R2, 1), // BPF_RB_NO_WAKEUP
		asm.FnRingbufSubmit.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}); err != nil {
		return nil, err
	}

	mm, argStart, err := argvOffsets()
	if err != nil {
		return nil, err
	}
	if f.user, err = execFloor("floor_user", asm.Instructions{
		asm.LoadMem(asm.R6, asm.R1, 0, asm.DWord),               // the task
		asm.LoadMem(asm.R6, asm.R6, int16(mm), asm.DWord),       // its mm
		asm.LoadMem(asm.R3, asm.R6, int16(argStart), asm.DWord), // the argv's address
		asm.Mov.Reg(asm.R1, asm.R10),
		asm.Add.Imm(asm.R1, -8),
		asm.Mov.Imm(asm.R2, 8),
		asm.FnProbeReadUser.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}); err != nil {
		return nil, err
	}
	if f.clock, err = execFloor("floor_clock", asm.Instructions{
		asm.FnKtimeGetBootNs.Call(),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}); err != nil {
		return nil, err
	}
	return f, nil
}

// execFloor loads insns on sched_process_exec, alone, and returns its
// median ns per run (floorRuns).
func execFloor(name string, insns asm.Instructions) (float64, error) {
	p, err := tracingProgram(name, "sched_process_exec", insns)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	per, err := floorRuns(map[string]*ebpf.Program{name: p})
	return per[name], err
}

// tracingProgram loads insns as a BTF raw tracepoint program on hook.
func tracingProgram(name, hook string, insns asm.Instructions) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         name,
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceRawTp,
		AttachTo:     hook,
		License:      "GPL",
		Instructions: insns,
	})
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", name, hook, err)
	}
	return p, nil
}

// floorRuns attaches progs and returns each one's median ns per run over
// the kernel table's storms (stormMedians), by the same names.
func floorRuns(progs map[string]*ebpf.Program) (map[string]float64, error) {
	for _, p := range progs {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return nil, fmt.Errorf("attaching: %w", err)
		}
		defer l.Close()
	}
	per, _, err := stormMedians(func() (map[string]progStat, error) {
		st := map[string]progStat{}
		for k, p := range progs {
			s, err := p.Stats()
			if err != nil {
				return nil, err
			}
			st[k] = progStat{runs: s.RunCount, ns: uint64(s.Runtime.Nanoseconds())}
		}
		return st, nil
	})
	return per, err
}

// argvOffsets finds, in the kernel's BTF, where a task_struct keeps its mm
// and where an mm_struct keeps the start of its arguments.
func argvOffsets() (mm, argStart uint32, err error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return 0, 0, fmt.Errorf("kernel BTF: %w", err)
	}
	var task, mms *btf.Struct
	if err := spec.TypeByName("task_struct", &task); err != nil {
		return 0, 0, err
	}
	if err := spec.TypeByName("mm_struct", &mms); err != nil {
		return 0, 0, err
	}
	var ok bool
	if mm, ok = memberOffset(task, "mm"); !ok {
		return 0, 0, errors.New("task_struct has no mm")
	}
	if argStart, ok = memberOffset(mms, "arg_start"); !ok {
		return 0, 0, errors.New("mm_struct has no arg_start")
	}
	return mm, argStart, nil
}

// memberOffset is the byte offset of a member of s, looking into the
// anonymous structs and unions s holds.
func memberOffset(s btf.Type, name string) (uint32, bool) {
	var members []btf.Member
	switch t := s.(type) {
	case *btf.Struct:
		members = t.Members
	case *btf.Union:
		members = t.Members
	default:
		return 0, false
	}
	for _, m := range members {
		if m.Name == name {
			return m.Offset.Bytes(), true
		}
		if m.Name == "" {
			if off, ok := memberOffset(m.Type, name); ok {
				return m.Offset.Bytes() + off, true
			}
		}
	}
	return 0, false
}
