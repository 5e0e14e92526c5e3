// SPDX-License-Identifier: GPL-2.0
/*
 * nstrace's BPF programs: process birth, exec and death, and every move
 * between namespaces, each stamped with the task's namespace inodes and
 * cgroup.
 *
 * Births, execs and deaths come from BTF-enabled raw tracepoints (tp_btf),
 * which need neither tracefs nor kprobes and hand over typed task
 * pointers. The namespace system calls are caught where the kernel does
 * the work (fentry/fexit on kernel_clone, ksys_unshare and the setns
 * system call), and where BPF trampolines are refused, at the raw syscall
 * tracepoints instead.
 */
#include "headers/kernel.h"
#include "headers/bpf_helpers.h"
#include "headers/bpf_tracing.h"
#include "headers/bpf_core_read.h"
#include "nstrace.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define NST_CLONE_NEW_MASK                                                        \
	(CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | \
	 CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWTIME)

/* Load-time options, set by the Go loader before the programs load. */
const volatile __u32 nst_want_fork = 1;
const volatile __u32 nst_want_exec = 1;
const volatile __u32 nst_want_exit = 1;
const volatile __u32 nst_want_clone = 0;
const volatile __u32 nst_want_unshare = 0;
const volatile __u32 nst_want_setns = 0;
const volatile __u32 nst_want_comm = 0;
const volatile __u32 nst_want_uid = 0;
const volatile __u32 nst_want_sid = 0;
const volatile __u32 nst_want_ptrace = 0;
/* Report failed execs (--failed). */
const volatile __u32 nst_want_failed = 0;
/* Every event carries its process's ancestors (--ancestors). */
const volatile __u32 nst_ancestors = 0;
/* Only processes in the traced map ... */
const volatile __u32 nst_filter_pids = 0;
/* ... and their children, added as they are born. */
const volatile __u32 nst_follow = 0;
/* Only processes with a namespace in the ns_filter map. */
const volatile __u32 nst_filter_ns = 0;
/* Only processes in a cgroup of the cgroup_filter map, or below one. */
const volatile __u32 nst_filter_cgroup = 0;
/*
 * The controller (enum nst_v1_controller) whose cgroup v1 hierarchy names the
 * cgroup of a process that is in the cgroup v2 root; none: v2 only.
 */
const volatile __u32 nst_cgroup_v1 = NST_CGV1_NONE;
/*
 * The id (cgroup_root.hierarchy_id) of the v1 hierarchy user space found
 * the controller mounted as, and reads paths and containers from. One
 * unmounted and mounted again is another hierarchy whose kernfs ids start
 * again, and an unmounted controller is back in v2's: while the
 * controller's cgroups are of another hierarchy, a task is named by its
 * v2 cgroup (task_cgroup).
 */
const volatile __s32 nst_cgroup_v1_hierarchy = 0;

/*
 * Events that could not be delivered, by enum nst_lost_reason, and all
 * reasons together: user space reads them from memory, and every record
 * carries nst_lost_seq so a loss shows up in the feed where it happened.
 */
__u64 nst_lost[NST_LOST_REASONS];
__u64 nst_lost_seq;

/*
 * Set by the reader when it has read everything and is about to sleep;
 * the first record after that wakes it, and clears it. Records find it
 * clear while the reader is busy or resting between batches, and wake
 * nobody: a wake-up costs an interrupt, too much to pay per event.
 */
__u32 nst_reader_waiting;

/*
 * Entries the programs put in clone_flags, clone_unnoted and pending and
 * did not take out yet (never fewer than there are): while it is 0, a
 * fork and a watched system call's return look in none of those tables.
 * An entry the LRU table drops leaves it higher than need be, which costs
 * only those looks.
 */
__u64 nst_inflight;

/* The host's namespaces, filled by nst_host_ns. */
struct host_ns nst_host;

/*
 * The cgroup key (enum nst_cgroup_key) of a task in the initial css_set,
 * the roots' in every hierarchy, as its first event found it: later ones
 * need no look.
 */
__u64 nst_host_cgroup;

/*
 * The same, given back by the loader, which runs nst_host_ns first (in a
 * collection of its own): a task in the host's namespaces costs no look
 * at them. Zero (never a live object's address) when it is not known.
 */
const volatile struct host_ns nst_known;

/*
 * Keep the record and its enums in BTF so that bpf2go writes their Go
 * mirrors: the Go side never restates them.
 */
const struct event *unused_event __attribute__((unused));
const enum nst_kind *unused_kind __attribute__((unused));
const enum nst_ns *unused_ns __attribute__((unused));
const enum nst_flag *unused_flag __attribute__((unused));
const enum nst_lost_reason *unused_lost __attribute__((unused));
const enum nst_syscall_class *unused_sysclass __attribute__((unused));
const enum nst_v1_controller *unused_v1_controller __attribute__((unused));
const enum nst_cgroup_key *unused_cgroup_key __attribute__((unused));
const struct ancestor *unused_ancestor __attribute__((unused));
const struct cgroup_event *unused_cgroup_event __attribute__((unused));
const struct wake_event *unused_wake_event __attribute__((unused));

/* The bytes of ancestors after a record, when asked for. */
#define NST_ANC_BYTES (NST_ANCESTORS_MAX * sizeof(struct ancestor))

/*
 * Room for the longest exec record: all of struct event, the ancestors and
 * the tail. The tail starts at exec_tail(): within ev, where the part exec
 * records carry ends, unless ancestors come first.
 */
struct exec_buf {
	struct event ev;
	char data[NST_ANC_BYTES + NST_FILENAME_MAX + NST_ARGS_MAX];
};

/* An event with room for its ancestors. */
struct event_anc {
	struct event ev;
	struct ancestor anc[NST_ANCESTORS_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/*
 * Scratch space for exec events, one slot per CPU. Larger than a per-CPU
 * array value may be (32 KiB), so it is a plain array indexed by CPU; the
 * loader sizes it to the number of possible CPUs.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_buf);
} exec_heap SEC(".maps");

/* Processes to report (thread group ids), when nst_filter_pids is set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} traced SEC(".maps");

/*
 * Namespaces to report, when nst_filter_ns is set: inode to a mask of the
 * types (bit i for enum nst_ns index i) under which it counts.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} ns_filter SEC(".maps");

/*
 * Cgroup keys (enum nst_cgroup_key) whose names were sent (struct
 * cgroup_event). Ids are never reused; user space removes the ones it
 * forgets.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} cgroups_sent SEC(".maps");

/*
 * The cgroups each CPU saw last, a few per CPU: most events come from a
 * cgroup seen a moment ago, and a look here costs far less than one in
 * cgroups_sent. An id here was sent, or is in cgroups_sent.
 */
#define NST_CPUS_MAX 256
#define NST_RECENT 8
struct recent_cgroups {
	__u64 id[NST_RECENT];
};
struct recent_cgroups nst_recent_cgroups[NST_CPUS_MAX];

/* Room to build an event that does not fit on the stack, one per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_anc);
} scratch SEC(".maps");

/* Cgroup keys to report, with their descendants (--container). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, __u8);
} cgroup_filter SEC(".maps");

/* How far up the cgroup tree the filter looks: a container's own cgroups
 * sit a few levels below the one the runtime made. */
#define NST_CGROUP_DEPTH 8

/* clone flags of an in-flight clone that creates namespaces, by thread. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} clone_flags SEC(".maps");

/*
 * Threads whose clone could not be noted in clone_flags: the clone's
 * return counts the loss, unless the call is being restarted (and will
 * try again). Least recently used entries make room.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} clone_unnoted SEC(".maps");

/* setns/unshare calls in flight: the event as seen on entry, by thread. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct event);
} pending SEC(".maps");

/*
 * Processes whose exit was reported, on kernels whose exit tracepoint does
 * not say which thread is the last (before Linux 6.16's group_dead): a
 * thread group and its leader's start time, so a reused pid never matches.
 * Least recently used entries make room; an entry is needed only while
 * the threads of one process exit together.
 */
struct exit_key {
	__u64 start_time;
	__u32 tgid;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct exit_key);
	__type(value, __u8);
} exit_claims SEC(".maps");

/*
 * The current task, read through CO-RE like any other: bpf_get_current_task
 * works on every kernel nstrace supports, bpf_get_current_task_btf from
 * Linux 5.11 only.
 */
static __always_inline struct task_struct *current_task(void)
{
	return (struct task_struct *)bpf_get_current_task();
}

static __always_inline void count_lost(enum nst_lost_reason r)
{
	__sync_fetch_and_add(&nst_lost[r], 1);
	__sync_fetch_and_add(&nst_lost_seq, 1);
}

/*
 * Wake the reader if it said it sleeps. This runs after the record is
 * committed, whose atomic exchange orders the commit before the look at
 * the flag; the reader sets the flag, fences, then looks for records. So
 * either the reader sees the record, or the record sees the flag. The
 * wake-up rides on a record of its own, sent only then.
 */
static __always_inline void wake_reader(void)
{
	struct wake_event w = {.kind = NST_EV_WAKE};

	if (!nst_reader_waiting)
		return;
	nst_reader_waiting = 0;
	bpf_ringbuf_output(&events, &w, sizeof(w), BPF_RB_FORCE_WAKEUP);
}

/* Queue a record built elsewhere. */
static __always_inline void emit(void *data, __u64 size)
{
	if (bpf_ringbuf_output(&events, data, size, BPF_RB_NO_WAKEUP))
		count_lost(NST_LOST_RINGBUF);
	wake_reader();
}

/* Queue a record reserved with reserve_event. */
static __always_inline void submit(struct event *e)
{
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	wake_reader();
}

/*
 * Room for a fixed-size record, straight in the ring buffer: it is filled
 * in place and submitted, never copied. It carries the first size bytes
 * of struct event (a constant: NST_REC_*, or all of it), or all of it and
 * the ancestors when they are asked for.
 */
static __always_inline struct event *reserve_event(__u64 size)
{
	struct event *e;

	if (nst_ancestors)
		e = bpf_ringbuf_reserve(&events, sizeof(struct event_anc), 0);
	else
		e = bpf_ringbuf_reserve(&events, size, 0);

	if (!e) {
		count_lost(NST_LOST_RINGBUF);
		return NULL;
	}
	if (nst_ancestors)
		__builtin_memset(e, 0, sizeof(*e));
	else
		__builtin_memset(e, 0, size);
	return e;
}

/* The size of a fixed record, its ancestors included when asked for. */
static __always_inline __u64 event_size(void)
{
	return nst_ancestors ? sizeof(struct event_anc) : sizeof(struct event);
}

/* A zeroed event to build off the stack, for this CPU's use now. */
static __always_inline struct event *scratch_event(void)
{
	__u32 zero = 0;
	struct event *e = bpf_map_lookup_elem(&scratch, &zero);

	if (e)
		__builtin_memset(e, 0, sizeof(*e));
	return e;
}

/* Add an entry to a table of calls in flight, counted in nst_inflight. */
static __always_inline long inflight_add(void *map, const void *key, const void *value)
{
	long err;

	__sync_fetch_and_add(&nst_inflight, 1);
	err = bpf_map_update_elem(map, key, value, BPF_ANY);
	if (err)
		__sync_fetch_and_add(&nst_inflight, -1);
	return err;
}

/* Take an entry out of a table of calls in flight. */
static __always_inline void inflight_del(void *map, const void *key)
{
	if (!bpf_map_delete_elem(map, key))
		__sync_fetch_and_add(&nst_inflight, -1);
}

/* Note a cgroup as sent, in this CPU's recent ones (oldest out). */
static __always_inline void cgroup_remember(__u64 id)
{
	__u32 cpu = bpf_get_smp_processor_id() & (NST_CPUS_MAX - 1);
	struct recent_cgroups *r = &nst_recent_cgroups[cpu];

	for (int i = NST_RECENT - 1; i > 0; i--)
		r->id[i] = r->id[i - 1];
	r->id[0] = id;
}

/*
 * The kernel's internal "restart the system call" codes (ERESTARTSYS to
 * ERESTART_RESTARTBLOCK): a call returning one is entered again, and
 * user space never sees it return.
 */
static __always_inline bool restarting(long ret)
{
	return ret <= -512 && ret >= -516;
}

static __always_inline bool pid_traced(__u32 tgid)
{
	return !nst_filter_pids || bpf_map_lookup_elem(&traced, &tgid);
}

static __always_inline bool ns_match(const __u32 *ns)
{
	__u32 *mask;

	for (int i = 0; i < NST_NS_COUNT; i++) {
		mask = bpf_map_lookup_elem(&ns_filter, &ns[i]);
		if (mask && (*mask & (1 << i)))
			return true;
	}
	return false;
}

/* Does the namespace filter pass these sets (a task's, and the other)? */
static __always_inline bool ns_pass(const __u32 *ns, const __u32 *other)
{
	return !nst_filter_ns || ns_match(ns) || (other && ns_match(other));
}

static __always_inline bool ns_wanted(const struct event *e)
{
	return ns_pass(e->ns, e->ns_other);
}

/* Has this cgroup's name been sent? A recent one is; else ask the table. */
static __always_inline bool cgroup_recent(__u64 id)
{
	__u32 cpu = bpf_get_smp_processor_id() & (NST_CPUS_MAX - 1);
	struct recent_cgroups *r = &nst_recent_cgroups[cpu];

	for (int i = 0; i < NST_RECENT; i++)
		if (r->id[i] == id)
			return true;
	if (!bpf_map_lookup_elem(&cgroups_sent, &id))
		return false;
	cgroup_remember(id);
	return true;
}

/*
 * The kernel's index in css_set.subsys[] of the controller nst_cgroup_v1
 * names, or -1: its enum cgroup_subsys_id, which depends on the
 * controllers the kernel was built with, read from the kernel's BTF.
 */
#define NST_SUBSYS(ours, theirs)                                               \
	case ours:                                                             \
		if (bpf_core_enum_value_exists(enum cgroup_subsys_id, theirs)) \
			return bpf_core_enum_value(enum cgroup_subsys_id, theirs); \
		break

static __always_inline int cgroup_v1_subsys(void)
{
	switch (nst_cgroup_v1) {
	NST_SUBSYS(NST_CGV1_PIDS, pids_cgrp_id);
	NST_SUBSYS(NST_CGV1_MEMORY, memory_cgrp_id);
	NST_SUBSYS(NST_CGV1_CPU, cpu_cgrp_id);
	NST_SUBSYS(NST_CGV1_CPUACCT, cpuacct_cgrp_id);
	NST_SUBSYS(NST_CGV1_DEVICES, devices_cgrp_id);
	NST_SUBSYS(NST_CGV1_FREEZER, freezer_cgrp_id);
	NST_SUBSYS(NST_CGV1_BLKIO, io_cgrp_id);
	NST_SUBSYS(NST_CGV1_CPUSET, cpuset_cgrp_id);
	}
	return -1;
}
#undef NST_SUBSYS

/* Task readers for BTF pointers: plain loads. */
#define NST_R(...) ___arrow(__VA_ARGS__)
#define NST_FN(name) name##_btf
#define NST_COMM(dst, t) __builtin_memcpy(dst, (t)->comm, NST_COMM_LEN)
#include "task.h"
#undef NST_R
#undef NST_FN
#undef NST_COMM

/* Task readers for other pointers: probe reads. */
#define NST_R(...) BPF_CORE_READ(__VA_ARGS__)
#define NST_FN(name) name##_any
#define NST_COMM(dst, t) bpf_core_read_str(dst, NST_COMM_LEN, &(t)->comm)
#include "task.h"
#undef NST_R
#undef NST_FN
#undef NST_COMM

/*
 * Is kn, or a cgroup above it, one the cgroup filter asks for? v1 marks
 * the keys of the v1 hierarchy's cgroups (NST_CGROUP_V1), or is 0.
 */
static __always_inline bool cgroup_match(struct kernfs_node *kn, __u64 v1)
{
	__u64 key;

	for (int i = 0; i < NST_CGROUP_DEPTH && kn; i++) {
		key = BPF_CORE_READ(kn, id) | v1;
		if (bpf_map_lookup_elem(&cgroup_filter, &key))
			return true;
		kn = kn_parent_any(kn);
	}
	return false;
}

/* Does the cgroup filter pass t? */
static __always_inline bool cgroup_pass(struct task_struct *t)
{
	struct kernfs_node *kn;
	__u64 key;

	if (!nst_filter_cgroup)
		return true;
	kn = task_cgroup_any(BPF_CORE_READ(t, cgroups), &key);
	return cgroup_match(kn, key & NST_CGROUP_V1);
}

/*
 * Fill the identity of t (the current task of a syscall hook), its
 * namespaces and cgroup id included. The tp_btf programs read and filter
 * on the namespaces first, then fill the rest (fill_event).
 */
static __always_inline void fill_task_any(struct event *e, struct task_struct *t)
{
	e->nspid = read_ns_any(t, e->ns);
	e->cgroup_id = note_cgroup_any(t);
	fill_ident_any(e, t);
}

/*
 * Fill a reserved record about t, whose namespaces (ns, nspid) the caller
 * has read and filtered on and whose cgroup it has noted (cgid): its
 * identity, and its ancestors when asked for.
 */
static __always_inline void fill_event(struct event *e, struct task_struct *t, const __u32 *ns, __u32 nspid,
				       __u64 cgid)
{
	__builtin_memcpy(e->ns, ns, sizeof(e->ns));
	e->nspid = nspid;
	e->cgroup_id = cgid;
	fill_ident_btf(e, t);
	if (nst_ancestors)
		fill_ancestors_btf(e, t);
}

/*
 * Start a record about t, of size bytes (a constant: NST_REC_* or all of
 * struct event): its cgroup's names go ahead of it if they must, then it
 * is reserved and filled (fill_event). NULL if the ring buffer is full.
 */
static __always_inline struct event *start_event(struct task_struct *t, const __u32 *ns, __u32 nspid, __u64 size)
{
	__u64 cgid = note_cgroup_btf(t);
	struct event *e = reserve_event(size);

	if (e)
		fill_event(e, t, ns, nspid, cgid);
	return e;
}

/* A child that could not join the traced set: say so in the feed. */
static __always_inline void emit_untracked(struct task_struct *parent, __u32 child)
{
	__u32 ns[NST_NS_COUNT] = {};
	struct event *e;
	__u32 nspid;

	count_lost(NST_LOST_TRACKED);
	nspid = read_ns_btf(parent, ns);
	e = start_event(parent, ns, nspid, NST_REC_SHORT);
	if (!e)
		return;
	e->kind = NST_EV_UNTRACKED;
	e->child_pid = child;
	submit(e);
}

/*
 * Are cns the namespaces a child of a task in ns has when the clone made
 * none: all its parent's, but the pid namespace, which is the parent's
 * for children?
 */
static __always_inline bool ns_inherited(const __u32 *ns, const __u32 *cns)
{
	for (int i = 0; i < NST_NS_COUNT; i++)
		if (cns[i] != ns[i == NST_NS_PID ? NST_NS_PID_FOR_CHILDREN : i])
			return false;
	return true;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(nst_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ctgid = child->tgid;
	__u32 ns[NST_NS_COUNT] = {}, cns[NST_NS_COUNT] = {};
	__u32 tid, ptgid, nspid, cnspid;
	__u64 flags = 0, *f, cgid;
	struct event *e;
	__u8 one = 1;

	/* A new thread is not a new process. */
	if (child->pid != ctgid)
		return 0;
	if (nst_filter_pids) {
		ptgid = parent->tgid;
		if (!bpf_map_lookup_elem(&traced, &ptgid))
			return 0;
		/*
		 * The child is not running yet (wake_up_new_task comes after
		 * this tracepoint), so it cannot escape before it is added.
		 */
		if (nst_follow && bpf_map_update_elem(&traced, &ctgid, &one, BPF_ANY))
			emit_untracked(parent, ctgid);
	}
	if (nst_want_clone && nst_inflight) {
		/* parent is the forking thread: the one that noted its flags. */
		tid = parent->pid;
		f = bpf_map_lookup_elem(&clone_flags, &tid);
		if (f)
			flags = *f;
	}
	if (!flags && !nst_want_fork)
		return 0;

	nspid = read_ns_btf(parent, ns);
	/*
	 * A child shares its parent's namespaces unless the clone made new
	 * ones: the same nsproxy and user namespace, both alive now, are the
	 * same namespaces. Only its own pid (and pid namespace) differ. (In
	 * the host's, read_ns looks at neither.)
	 */
	if (child->nsproxy == parent->nsproxy && (__u64)child->nsproxy != nst_known.nsproxy &&
	    child->real_cred->user_ns == parent->real_cred->user_ns) {
		__builtin_memcpy(cns, ns, sizeof(cns));
		cnspid = own_pid_btf(child, &cns[NST_NS_PID]);
	} else {
		cnspid = read_ns_btf(child, cns);
	}
	if (!ns_pass(ns, cns) || !cgroup_pass(parent))
		return 0;
	cgid = note_cgroup_btf(parent);
	/*
	 * Most children are in their parent's namespaces: the record says so
	 * rather than carry them, and is a line shorter.
	 */
	if (!flags && ns_inherited(ns, cns)) {
		e = reserve_event(NST_REC_SHORT);
		if (!e)
			return 0;
		e->flags = NST_F_CHILD_NS_INHERITED;
	} else {
		e = reserve_event(NST_REC_FORK);
		if (!e)
			return 0;
		__builtin_memcpy(e->ns_other, cns, sizeof(cns));
		e->flags_raw = flags;
	}
	/*
	 * The child's birth time, which copy_process took a moment ago on
	 * the same clock: no need to read it again.
	 */
	e->ts_ns = child->start_boottime;
	fill_event(e, parent, ns, nspid, cgid);
	e->kind = flags ? NST_EV_CLONE : NST_EV_FORK;
	e->child_pid = ctgid;
	e->child_nspid = cnspid;
	e->ret = ctgid;
	submit(e);
	return 0;
}

/* This CPU's exec heap, its event zeroed. */
static __always_inline struct exec_buf *exec_heap_get(void)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct exec_buf *b = bpf_map_lookup_elem(&exec_heap, &cpu);

	if (b)
		__builtin_memset(&b->ev, 0, sizeof(b->ev));
	return b;
}

/*
 * Where an exec record's filename goes: after the part of struct event
 * exec records carry, or after all of it and the ancestors.
 */
static __always_inline __u64 exec_tail(void)
{
	return nst_ancestors ? sizeof(struct event) + NST_ANC_BYTES : NST_REC_SHORT;
}

/*
 * Copy a file name (from kernel or user memory) into the exec record's
 * tail; returns its length without the NUL.
 */
static __always_inline long exec_filename(struct exec_buf *b, const char *name, bool user)
{
	struct event *e = &b->ev;
	long n;

	if (user)
		n = bpf_probe_read_user_str((char *)b + exec_tail(), NST_FILENAME_MAX, name);
	else
		n = bpf_probe_read_kernel_str((char *)b + exec_tail(), NST_FILENAME_MAX, name);
	if (n <= 0)
		n = 1;
	if (n >= NST_FILENAME_MAX)
		e->flags |= NST_F_FILENAME_TRUNCATED;
	n--; /* drop the NUL */
	barrier_var(n);
	if (n < 0 || n >= NST_FILENAME_MAX)
		n = 0;
	e->filename_len = n;
	return n;
}

/*
 * Most execs have a short file name and few arguments: their record is
 * built in place in the ring buffer, with room for both (each under half
 * of it, which is what the verifier can check), not on the exec heap and
 * then copied. Returns false, having queued nothing, for one that does
 * not fit.
 */
#define NST_EXEC_SMALL 256

static __always_inline bool exec_in_place(struct task_struct *p, const __u32 *ns, __u32 nspid, __u64 cgid,
					  const char *filename, unsigned long start, unsigned long len)
{
	struct event *e;
	char *tail;
	long n;

	if (nst_ancestors || len > NST_EXEC_SMALL / 2)
		return false;
	e = bpf_ringbuf_reserve(&events, NST_REC_SHORT + NST_EXEC_SMALL, 0);
	if (!e) {
		count_lost(NST_LOST_RINGBUF);
		return true;
	}
	tail = (char *)e + NST_REC_SHORT;
	n = bpf_probe_read_kernel_str(tail, NST_EXEC_SMALL / 2, filename);
	if (n <= 0 || n >= NST_EXEC_SMALL / 2) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return false;
	}
	__builtin_memset(e, 0, NST_REC_SHORT);
	n--; /* without the NUL */
	/* Bounds the verifier sees, as Linux 5.10's needs them spelled out. */
	barrier_var(n);
	if (n < 0 || n >= NST_EXEC_SMALL / 2)
		n = 0;
	barrier_var(len);
	if (len > NST_EXEC_SMALL / 2)
		len = 0;
	if (len && bpf_probe_read_user(tail + n, len, (void *)start)) {
		e->flags |= NST_F_ARGS_UNREADABLE;
		len = 0;
	}
	fill_event(e, p, ns, nspid, cgid);
	e->kind = NST_EV_EXEC;
	e->filename_len = n;
	e->args_len = len;
	submit(e);
	return true;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(nst_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	unsigned long start, end, len;
	__u32 ns[NST_NS_COUNT] = {};
	__u32 old = old_pid, nspid;
	struct exec_buf *b;
	struct mm_struct *mm;
	struct event *e;
	__u64 cgid;
	long n;

	/* A watched execve succeeded: no failure to report. */
	if (nst_want_failed && nst_inflight)
		inflight_del(&pending, &old);
	if (!nst_want_exec || !pid_traced(p->tgid) || !cgroup_pass(p))
		return 0;
	/*
	 * The new image's argv, straight from its stack: at this point the
	 * exec has succeeded and the pages were just written by the kernel.
	 */
	mm = p->mm;
	start = mm->arg_start;
	end = mm->arg_end;
	len = end > start ? end - start : 0;
	nspid = read_ns_btf(p, ns);
	if (!ns_pass(ns, NULL))
		return 0;
	/* The cgroup's names, if they go, go ahead of the record. */
	cgid = note_cgroup_btf(p);
	if (exec_in_place(p, ns, nspid, cgid, bprm->filename, start, len))
		return 0;
	b = exec_heap_get();
	if (!b)
		return 0;
	e = &b->ev;
	fill_event(e, p, ns, nspid, cgid);
	e->kind = NST_EV_EXEC;
	n = exec_filename(b, bprm->filename, false);
	if (len > NST_ARGS_MAX) {
		len = NST_ARGS_MAX;
		e->flags |= NST_F_ARGS_TRUNCATED;
	}
	barrier_var(len);
	if (len > NST_ARGS_MAX)
		len = 0;
	if (len && bpf_probe_read_user((char *)b + exec_tail() + n, len, (void *)start)) {
		e->flags |= NST_F_ARGS_UNREADABLE;
		len = 0;
	}
	e->args_len = len;
	emit(b, exec_tail() + n + len);
	return 0;
}

SEC("tp_btf/task_rename")
int BPF_PROG(nst_comm, struct task_struct *t, const char *comm)
{
	__u32 ns[NST_NS_COUNT] = {};
	struct event *e;
	__u32 nspid;

	/*
	 * Every exec names the task after its new file (begin_new_exec):
	 * that is the exec event's news, not a rename.
	 */
	if (BPF_CORE_READ_BITFIELD(t, in_execve))
		return 0;
	if (!pid_traced(t->tgid))
		return 0;
	nspid = read_ns_btf(t, ns);
	if (!ns_pass(ns, NULL) || !cgroup_pass(t))
		return 0;
	e = start_event(t, ns, nspid, sizeof(*e));
	if (!e)
		return 0;
	e->kind = NST_EV_COMM;
	/* The renamed thread's own name, before and after. */
	__builtin_memcpy(e->comm, t->comm, NST_COMM_LEN);
	bpf_probe_read_kernel_str(e->comm_new, sizeof(e->comm_new), comm);
	submit(e);
	return 0;
}

/* Report the exit of p's process; p is its last thread. */
static __always_inline int exit_report(struct task_struct *p)
{
	struct signal_struct *sig = p->signal;
	struct task_struct *leader = p->group_leader;
	__u32 ns[NST_NS_COUNT] = {};
	__u32 tgid = p->tgid, nspid;
	struct event *e;

	if (nst_filter_pids) {
		if (!bpf_map_lookup_elem(&traced, &tgid))
			return 0;
		bpf_map_delete_elem(&traced, &tgid);
	}
	if (!nst_want_exit)
		return 0;

	nspid = read_ns_btf(p, ns);
	if (!ns_pass(ns, NULL) || !cgroup_pass(p))
		return 0;
	e = start_event(p, ns, nspid, NST_REC_SHORT);
	if (!e)
		return 0;
	e->kind = NST_EV_EXIT;
	e->duration_ns = e->ts_ns - leader->start_boottime;
	/* What wait(2) reports: the group's code, or the leader's own. */
	if (sig->flags & SIGNAL_GROUP_EXIT)
		e->exit_status = sig->group_exit_code;
	else
		e->exit_status = leader->exit_code;
	submit(e);
	return 0;
}

/*
 * Since Linux 6.16 the tracepoint says whether this thread's exit ended
 * its thread group (the kernel's own atomic_dec_and_test of signal->live).
 */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(nst_exit, struct task_struct *p, bool group_dead)
{
	if (!group_dead)
		return 0;
	return exit_report(p);
}

/*
 * Before that, signal->live is all there is: the last thread to leave
 * finds it at 0, but so can another thread of the group that left just
 * before it and reaches the tracepoint later. The first of them to claim
 * the process reports it.
 */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(nst_exit_claim, struct task_struct *p)
{
	struct exit_key k = {};
	__u8 one = 1;

	if (p->signal->live.counter != 0)
		return 0;
	k.tgid = p->tgid;
	k.start_time = p->group_leader->start_time;
	if (bpf_map_update_elem(&exit_claims, &k, &one, BPF_NOEXIST))
		return 0;
	return exit_report(p);
}

/*
 * Namespace system calls. Syscall numbers are per architecture and, for
 * 32-bit (compat) tasks, per ABI; the loader sets them.
 */
const volatile __u8 nst_sysclass[NST_SYSCALLS_MAX];
const volatile __u8 nst_sysclass32[NST_SYSCALLS_MAX];
/* The numbers with a class in either table, a bit each: one cache line. */
const volatile __u64 nst_syswatch[NST_SYSCALLS_MAX / 64];

/* Is the current system call a 32-bit one (ia32 on x86_64, AArch32)? */
static __always_inline bool syscall_compat(void)
{
	struct task_struct *t = current_task();
	struct thread_info___x86 *x86 = (void *)&t->thread_info;
	struct thread_info___arm64 *arm64 = (void *)&t->thread_info;

	if (bpf_core_field_exists(x86->status))
		return BPF_CORE_READ(x86, status) & TS_COMPAT;
	return BPF_CORE_READ(arm64, flags) & (1UL << TIF_32BIT);
}

/* A syscall argument (0 or 1) from the registers of x86_64 or arm64. */
static __always_inline unsigned long syscall_arg(struct pt_regs *regs, int n, bool compat)
{
	struct pt_regs___x86 *x86 = (void *)regs;
	struct pt_regs___arm64 *arm64 = (void *)regs;

	if (bpf_core_field_exists(x86->di)) {
		if (compat)
			return n == 0 ? BPF_CORE_READ(x86, bx) : BPF_CORE_READ(x86, cx);
		return n == 0 ? BPF_CORE_READ(x86, di) : BPF_CORE_READ(x86, si);
	}
	return n == 0 ? BPF_CORE_READ(arm64, regs[0]) : BPF_CORE_READ(arm64, regs[1]);
}

static __always_inline long syscall_nr(struct pt_regs *regs)
{
	struct pt_regs___x86 *x86 = (void *)regs;
	struct pt_regs___arm64 *arm64 = (void *)regs;

	/* regs is a BTF pointer: direct loads, no helper call per syscall. */
	if (bpf_core_field_exists(x86->orig_ax))
		return x86->orig_ax;
	return arm64->syscallno;
}

/*
 * One of the calls nstrace watches, in either ABI? The cheap first test,
 * which every system call on the host pays: a bit of nst_syswatch.
 */
static __always_inline bool syscall_watched(long id)
{
	if ((unsigned long)id >= NST_SYSCALLS_MAX)
		return false;
	return (nst_syswatch[id / 64] >> (id % 64)) & 1;
}

/* What the call is, by its own ABI's table. */
static __always_inline __u8 syscall_class(long id, bool compat)
{
	if ((unsigned long)id >= NST_SYSCALLS_MAX)
		return NST_SYS_NONE;
	return compat ? nst_sysclass32[id] : nst_sysclass[id];
}

/* The current task's real and effective ids, for a later comparison. */
static __always_inline void read_creds(struct event *e)
{
	const struct cred *c = BPF_CORE_READ(current_task(), real_cred);

	e->old_uid = BPF_CORE_READ(c, uid.val);
	e->old_euid = BPF_CORE_READ(c, euid.val);
	e->old_gid = BPF_CORE_READ(c, gid.val);
	e->old_egid = BPF_CORE_READ(c, egid.val);
}

/*
 * A call to report when it returns: what is known on entry is kept by
 * thread until then. flags_raw holds the call's first argument, target_pid
 * its second where it names a process.
 */
static __always_inline void pending_start(__u32 kind, __u64 flags_raw, int fd, __u32 flags, __u32 pid)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct event *e;

	if (!pid_traced(id >> 32))
		return;
	e = scratch_event();
	if (!e)
		return;
	e->kind = kind;
	e->flags = flags;
	e->flags_raw = flags_raw;
	e->fd = fd;
	e->target_pid = pid;
	if (kind == NST_EV_UID)
		read_creds(e);
	else
		read_ns_any(current_task(), e->ns_other);
	if (inflight_add(&pending, &tid, e))
		count_lost(NST_LOST_PENDING);
}

/* A failed exec: the file it tried, read where the caller still is. */
static __always_inline void failed_exec(struct event *p, long ret)
{
	struct exec_buf *b = exec_heap_get();
	struct event *e;
	long n;

	if (!b)
		return;
	e = &b->ev;
	fill_task_any(e, current_task());
	if (!ns_wanted(e))
		return;
	e->kind = NST_EV_EXEC;
	e->ret = ret;
	e->flags |= p->flags;
	if (nst_ancestors)
		fill_ancestors_any(e, current_task());
	n = exec_filename(b, (const char *)p->flags_raw, true);
	emit(b, exec_tail() + n);
}

static __always_inline void pending_finish(long ret)
{
	struct event_anc *a;
	struct event *e, *p;
	__u32 zero = 0, tid;

	if (!nst_inflight)
		return;
	tid = (__u32)bpf_get_current_pid_tgid();
	p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return;
	if (restarting(ret) || !cgroup_pass(current_task()))
		goto done;
	if (p->kind == NST_EV_EXEC) {
		if (ret < 0)
			failed_exec(p, ret);
		goto done;
	}
	a = bpf_map_lookup_elem(&scratch, &zero);
	if (!a)
		goto done;
	e = &a->ev;
	__builtin_memcpy(e, p, sizeof(*e));
	fill_task_any(e, current_task());
	e->ret = ret;
	/* A set*id call that changed neither real nor effective ids. */
	if (e->kind == NST_EV_UID && e->uid == e->old_uid && e->euid == e->old_euid &&
	    e->gid == e->old_gid && e->egid == e->old_egid)
		goto done;
	if (nst_ancestors)
		fill_ancestors_any(e, current_task());
	if (ns_wanted(e))
		emit(e, event_size());
done:
	inflight_del(&pending, &tid);
}

static __always_inline struct file *task_file(struct task_struct *t, int fd)
{
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	struct file **fds, *f = NULL;

	if (fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_core_read(&f, sizeof(f), &fds[fd]);
	return f;
}

static __always_inline int ns_type(struct ns_common *ns)
{
	struct ns_common___ns_type *n = (void *)ns;

	if (bpf_core_field_exists(n->ns_type))
		return BPF_CORE_READ(n, ns_type);
	return BPF_CORE_READ(ns, ops, type);
}

static __always_inline bool is_pidfd_anon(struct file *f)
{
	static const char want[] = "[pidfd]";
	char name[sizeof(want)] = {};

	if (bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(f, f_path.dentry, d_name.name)) != sizeof(want))
		return false;
	for (int i = 0; i < (int)sizeof(want); i++)
		if (name[i] != want[i])
			return false;
	return true;
}

/* setns(fd, nstype): note what the fd refers to before the call. */
static __always_inline void setns_enter(int fd, int nstype, __u32 flags)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct file *f;
	struct inode *ino;
	struct event *e;
	struct pid *pid;
	void *priv;

	if (!nst_want_setns)
		return;
	pending_start(NST_EV_SETNS, (__u32)nstype, fd, flags, 0);
	e = bpf_map_lookup_elem(&pending, &tid);
	if (!e)
		return;
	f = task_file(current_task(), fd);
	if (!f)
		return;
	ino = BPF_CORE_READ(f, f_inode);
	priv = BPF_CORE_READ(ino, i_private);
	switch (BPF_CORE_READ(ino, i_sb, s_magic)) {
	case NSFS_MAGIC:
		e->flags |= NST_F_TARGET_NSFS;
		e->target_ns = BPF_CORE_READ(ino, i_ino);
		e->target_type = ns_type(priv);
		return;
	case PIDFS_MAGIC:
		/* pidfs (Linux 6.9) keeps the struct pid in the inode. */
		pid = priv;
		break;
	default:
		/*
		 * Before pidfs, a pidfd is an anonymous inode file named
		 * "[pidfd]" whose private data is the struct pid.
		 */
		if (!is_pidfd_anon(f))
			return;
		pid = BPF_CORE_READ(f, private_data);
	}
	e->flags |= NST_F_TARGET_PIDFD;
	e->target_pid = BPF_CORE_READ(pid, numbers[0].nr);
}

static __always_inline void unshare_enter(__u64 flags, __u32 eflags)
{
	if (nst_want_unshare)
		pending_start(NST_EV_UNSHARE, flags, -1, eflags, 0);
}

/*
 * clone flags are not visible at sched_process_fork, so a clone that
 * creates namespaces is noted here; the fork tracepoint then reports the
 * birth as a clone event.
 */
static __always_inline void clone_enter(__u64 flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;

	if (!nst_want_clone || !(flags & NST_CLONE_NEW_MASK) || (flags & CLONE_THREAD) || !pid_traced(id >> 32))
		return;
	if (inflight_add(&clone_flags, &tid, &flags)) {
		__u8 one = 1;

		inflight_add(&clone_unnoted, &tid, &one);
	}
}

static __always_inline void clone_exit(long ret)
{
	struct event *e;
	__u64 *flags;
	__u32 tid;

	if (!nst_inflight)
		return;
	tid = (__u32)bpf_get_current_pid_tgid();
	flags = bpf_map_lookup_elem(&clone_flags, &tid);
	if (!flags) {
		/* Its birth was reported as a fork, or its failure not at all. */
		if (bpf_map_lookup_elem(&clone_unnoted, &tid)) {
			inflight_del(&clone_unnoted, &tid);
			if (!restarting(ret))
				count_lost(NST_LOST_CLONE_FLAGS);
		}
		return;
	}
	/* A failed clone has no fork to report it: do it here. */
	if (ret < 0 && !restarting(ret) && cgroup_pass(current_task()) && (e = scratch_event())) {
		fill_task_any(e, current_task());
		e->kind = NST_EV_CLONE;
		e->flags_raw = *flags;
		e->ret = ret;
		if (nst_ancestors)
			fill_ancestors_any(e, current_task());
		if (ns_wanted(e))
			emit(e, event_size());
	}
	inflight_del(&clone_flags, &tid);
}

/*
 * The raw syscall tracepoints: every system call on the host passes here
 * while clone, unshare or setns are selected, so the first test is a few
 * compares of the syscall number.
 */
/* ptrace requests nstrace reports (include/uapi/linux/ptrace.h). */
#define PTRACE_TRACEME 0
#define PTRACE_ATTACH 16
#define PTRACE_DETACH 17
#define PTRACE_SEIZE 0x4206

/*
 * A watched call's entry. Kept out of line (as is its return's), so that
 * the programs every system call runs are a few instructions long and
 * their end is next to their start: one line of code to fetch, not two
 * far apart.
 */
static __noinline int sys_enter_watched(struct pt_regs *regs, long id)
{
	__u64 flags = 0, req;
	__u32 f = 0;
	bool compat;

	/*
	 * A 32-bit task's numbers belong to another table: its pselect6 is
	 * the 64-bit setns's number.
	 */
	compat = syscall_compat();
	if (compat)
		f = NST_F_COMPAT;
	switch (syscall_class(id, compat)) {
	case NST_SYS_CLONE:
		clone_enter(syscall_arg(regs, 0, compat));
		break;
	case NST_SYS_CLONE3:
		/* clone3(struct clone_args *args, size): flags come first. */
		if (nst_want_clone) {
			bpf_probe_read_user(&flags, sizeof(flags), (void *)syscall_arg(regs, 0, compat));
			clone_enter(flags);
		}
		break;
	case NST_SYS_UNSHARE:
		unshare_enter(syscall_arg(regs, 0, compat), f);
		break;
	case NST_SYS_SETNS:
		setns_enter(syscall_arg(regs, 0, compat), syscall_arg(regs, 1, compat), f);
		break;
	case NST_SYS_EXECVE:
		if (nst_want_failed)
			pending_start(NST_EV_EXEC, syscall_arg(regs, 0, compat), -1, f, 0);
		break;
	case NST_SYS_EXECVEAT:
		/* execveat(dirfd, pathname, ...): the name relative to dirfd. */
		if (nst_want_failed)
			pending_start(NST_EV_EXEC, syscall_arg(regs, 1, compat), syscall_arg(regs, 0, compat), f, 0);
		break;
	case NST_SYS_CRED:
		if (nst_want_uid)
			pending_start(NST_EV_UID, 0, -1, f, 0);
		break;
	case NST_SYS_SETSID:
		if (nst_want_sid)
			pending_start(NST_EV_SID, 0, -1, f, 0);
		break;
	case NST_SYS_PTRACE:
		req = syscall_arg(regs, 0, compat);
		if (nst_want_ptrace && (req == PTRACE_TRACEME || req == PTRACE_ATTACH || req == PTRACE_DETACH || req == PTRACE_SEIZE))
			pending_start(NST_EV_PTRACE, req, -1, f, syscall_arg(regs, 1, compat));
		break;
	}
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(nst_sys_enter, struct pt_regs *regs, long id)
{
	if (!syscall_watched(id))
		return 0;
	return sys_enter_watched(regs, id);
}

static __noinline int sys_exit_watched(long ret)
{
	/*
	 * A thread is in one system call at a time: an entry under its id,
	 * made at sys_enter, belongs to the call now returning.
	 */
	clone_exit(ret);
	pending_finish(ret);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(nst_sys_exit, struct pt_regs *regs, long ret)
{
	if (!syscall_watched(syscall_nr(regs)))
		return 0;
	return sys_exit_watched(ret);
}

/*
 * The same calls where the kernel does the work, for kernels that allow
 * BPF trampolines: no other system call pays anything. kernel_clone sees
 * fork, vfork, clone and clone3 with their full 64-bit flags, in either
 * ABI; ksys_unshare likewise. setns is caught at the architecture's
 * syscall wrapper (the loader names it), the 64-bit one only.
 */
SEC("fentry/kernel_clone")
int BPF_PROG(nst_clone_in, struct kernel_clone_args *args)
{
	clone_enter(args->flags);
	return 0;
}

SEC("fexit/kernel_clone")
int BPF_PROG(nst_clone_out, struct kernel_clone_args *args, pid_t ret)
{
	clone_exit(ret);
	return 0;
}

SEC("fentry/ksys_unshare")
int BPF_PROG(nst_unshare_in, unsigned long flags)
{
	unshare_enter(flags, 0);
	return 0;
}

SEC("fexit/ksys_unshare")
int BPF_PROG(nst_unshare_out, unsigned long flags, int ret)
{
	pending_finish(ret);
	return 0;
}

SEC("fentry/setns")
int BPF_PROG(nst_setns_in, struct pt_regs *regs)
{
	setns_enter(syscall_arg(regs, 0, false), syscall_arg(regs, 1, false), 0);
	return 0;
}

SEC("fexit/setns")
int BPF_PROG(nst_setns_out, struct pt_regs *regs, long ret)
{
	pending_finish(ret);
	return 0;
}

/*
 * Loaded alone, with no map, to learn whether this kernel lets BPF
 * trampolines attach at all: some refuse every fentry program.
 */
SEC("fentry/ksys_unshare")
int BPF_PROG(nst_fentry_ok)
{
	return 0;
}

/*
 * Run once by the loader (BPF_PROG_TEST_RUN) to learn the host's
 * namespaces from the kernel, wherever nstrace itself runs: up the
 * parents to the first task (pid 0), whose namespaces are the initial
 * ones.
 */
SEC("raw_tp")
int nst_host_ns(void *ctx)
{
	struct task_struct *t = current_task();

	for (int i = 0; i < 128 && t; i++) {
		if (BPF_CORE_READ(t, pid) == 0) {
			read_ns_any(t, nst_host.ns);
			nst_host.nsproxy = (__u64)BPF_CORE_READ(t, nsproxy);
			nst_host.user_ns = (__u64)BPF_CORE_READ(t, real_cred, user_ns);
			nst_host.css_set = (__u64)BPF_CORE_READ(t, cgroups);
			nst_host.cgroup_id = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
			nst_host.found = 1;
			return 0;
		}
		t = BPF_CORE_READ(t, real_parent);
	}
	return 0;
}
