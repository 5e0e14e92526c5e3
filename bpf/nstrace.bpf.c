// SPDX-License-Identifier: GPL-2.0
/*
 * nstrace's BPF programs: process birth, exec and death, and every move
 * between namespaces, each stamped with the task's namespace inodes.
 *
 * Only BTF-enabled raw tracepoints (tp_btf) are used: they need neither
 * tracefs, kprobes nor BPF trampolines, and give typed arguments.
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
/* Only processes in the traced map ... */
const volatile __u32 nst_filter_pids = 0;
/* ... and their children, added as they are born. */
const volatile __u32 nst_follow = 0;
/* Only processes with a namespace in the ns_filter map. */
const volatile __u32 nst_filter_ns = 0;
/* Wake the reader only once this much is queued; 0 wakes on every event. */
const volatile __u32 nst_wakeup_bytes = 0;

struct exec_buf {
	struct event ev;
	char data[NST_FILENAME_MAX + NST_ARGS_MAX];
};

/*
 * Keep the record and its enums in BTF so that bpf2go writes their Go
 * mirrors: the Go side never restates them.
 */
const struct event *unused_event __attribute__((unused));
const enum nst_kind *unused_kind __attribute__((unused));
const enum nst_ns *unused_ns __attribute__((unused));
const enum nst_flag *unused_flag __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/* Failed ring buffer writes, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

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

/* clone flags of an in-flight clone that creates namespaces. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} clone_flags SEC(".maps");

/* setns/unshare calls in flight: the event as seen on entry, by thread. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct event);
} pending SEC(".maps");

/*
 * The current task, read through CO-RE like any other: bpf_get_current_task
 * works from Linux 4.8, where bpf_get_current_task_btf needs 5.11.
 */
static __always_inline struct task_struct *current_task(void)
{
	return (struct task_struct *)bpf_get_current_task();
}

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&lost, &zero);

	if (n)
		*n += 1;
}

/* When the reader was last woken for an event that found it idle. */
__u64 nst_last_wakeup = 0;

/* Wake the idle reader at most this often; it also polls on a timer. */
#define NST_IDLE_WAKEUP_NS (10 * 1000 * 1000)

/*
 * Batch wake-ups: a wake-up costs an interrupt and a context switch, too
 * much to pay per event under load. The reader is woken when a batch of
 * nst_wakeup_bytes is queued, or when an event finds it idle (all earlier
 * records consumed) and it has not been woken that way for 10 ms. Anything
 * else waits for the reader's poll timer.
 */
static __always_inline __u64 wakeup_flags(void)
{
	__u64 avail, now;

	if (!nst_wakeup_bytes)
		return 0;
	avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	if (avail >= nst_wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	if (avail == 0) {
		now = bpf_ktime_get_ns();
		if (now - nst_last_wakeup >= NST_IDLE_WAKEUP_NS) {
			nst_last_wakeup = now;
			return BPF_RB_FORCE_WAKEUP;
		}
	}
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void emit(void *data, __u64 size)
{
	if (bpf_ringbuf_output(&events, data, size, wakeup_flags()))
		count_lost();
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

/* Does the namespace filter pass e (its own namespaces, or the other set)? */
static __always_inline bool ns_wanted(const struct event *e)
{
	return !nst_filter_ns || ns_match(e->ns) || ns_match(e->ns_other);
}

/* The pid of p in its own (innermost) pid namespace, and that namespace. */
static __always_inline __u32 pid_own(struct pid *p, __u32 *ns_inum)
{
	unsigned int level = BPF_CORE_READ(p, level);
	struct upid up = {};

	bpf_core_read(&up, sizeof(up), &p->numbers[level]);
	if (ns_inum)
		*ns_inum = BPF_CORE_READ(up.ns, ns.inum);
	return up.nr;
}

static __always_inline void read_ns(struct task_struct *t, __u32 *ns)
{
	struct nsproxy *np = BPF_CORE_READ(t, nsproxy);

	/* nsproxy is NULL only once an exiting task has left its namespaces. */
	if (np) {
		ns[NST_NS_CGROUP] = BPF_CORE_READ(np, cgroup_ns, ns.inum);
		ns[NST_NS_IPC] = BPF_CORE_READ(np, ipc_ns, ns.inum);
		ns[NST_NS_MNT] = BPF_CORE_READ(np, mnt_ns, ns.inum);
		ns[NST_NS_NET] = BPF_CORE_READ(np, net_ns, ns.inum);
		ns[NST_NS_PID_FOR_CHILDREN] = BPF_CORE_READ(np, pid_ns_for_children, ns.inum);
		ns[NST_NS_UTS] = BPF_CORE_READ(np, uts_ns, ns.inum);
		/* Time namespaces arrived in Linux 5.6. */
		if (bpf_core_field_exists(np->time_ns)) {
			ns[NST_NS_TIME] = BPF_CORE_READ(np, time_ns, ns.inum);
			ns[NST_NS_TIME_FOR_CHILDREN] = BPF_CORE_READ(np, time_ns_for_children, ns.inum);
		}
	}
	/* /proc/PID/ns/user follows the objective credentials. */
	ns[NST_NS_USER] = BPF_CORE_READ(t, real_cred, user_ns, ns.inum);
	pid_own(BPF_CORE_READ(t, thread_pid), &ns[NST_NS_PID]);
}

static __always_inline __u32 task_nspid(struct task_struct *t)
{
	return pid_own(BPF_CORE_READ(t, group_leader, thread_pid), NULL);
}

/* Fill the identity of t, the task an event is about. */
static __always_inline void fill_task(struct event *e, struct task_struct *t)
{
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = BPF_CORE_READ(t, tgid);
	e->tid = BPF_CORE_READ(t, pid);
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	e->nspid = task_nspid(t);
	e->uid = BPF_CORE_READ(t, real_cred, uid.val);
	e->gid = BPF_CORE_READ(t, real_cred, gid.val);
	e->cgroup_id = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
	BPF_CORE_READ_STR_INTO(&e->comm, t, group_leader, comm);
	read_ns(t, e->ns);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(nst_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 ptgid, ctgid;
	__u64 flags = 0, *f;
	struct event e = {};
	__u8 one = 1;

	/* A new thread is not a new process. */
	ctgid = BPF_CORE_READ(child, tgid);
	if (BPF_CORE_READ(child, pid) != ctgid)
		return 0;
	if (nst_filter_pids) {
		ptgid = BPF_CORE_READ(parent, tgid);
		if (!bpf_map_lookup_elem(&traced, &ptgid))
			return 0;
		/*
		 * The child is not running yet (wake_up_new_task comes after
		 * this tracepoint), so it cannot escape before it is added.
		 */
		if (nst_follow && bpf_map_update_elem(&traced, &ctgid, &one, BPF_ANY))
			count_lost();
	}
	if (nst_want_clone) {
		f = bpf_map_lookup_elem(&clone_flags, &tid);
		if (f)
			flags = *f;
	}
	if (!flags && !nst_want_fork)
		return 0;

	fill_task(&e, parent);
	e.kind = flags ? NST_EV_CLONE : NST_EV_FORK;
	e.flags_raw = flags;
	e.child_pid = ctgid;
	e.child_nspid = task_nspid(child);
	e.ret = ctgid;
	read_ns(child, e.ns_other);
	if (ns_wanted(&e))
		emit(&e, sizeof(e));
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(nst_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 cpu = bpf_get_smp_processor_id();
	unsigned long start, end, len;
	struct exec_buf *b;
	struct mm_struct *mm;
	struct event *e;
	long n;

	if (!nst_want_exec || !pid_traced(BPF_CORE_READ(p, tgid)))
		return 0;
	b = bpf_map_lookup_elem(&exec_heap, &cpu);
	if (!b)
		return 0;
	e = &b->ev;
	__builtin_memset(e, 0, sizeof(*e));
	fill_task(e, p);
	e->kind = NST_EV_EXEC;
	if (!ns_wanted(e))
		return 0;

	n = bpf_probe_read_kernel_str(b->data, NST_FILENAME_MAX, BPF_CORE_READ(bprm, filename));
	if (n <= 0)
		n = 1;
	if (n >= NST_FILENAME_MAX)
		e->flags |= NST_F_FILENAME_TRUNCATED;
	n--; /* drop the NUL */
	barrier_var(n);
	if (n < 0 || n >= NST_FILENAME_MAX)
		n = 0;
	e->filename_len = n;

	/*
	 * The new image's argv, straight from its stack: at this point the
	 * exec has succeeded and the pages were just written by the kernel.
	 */
	mm = BPF_CORE_READ(p, mm);
	start = BPF_CORE_READ(mm, arg_start);
	end = BPF_CORE_READ(mm, arg_end);
	len = end > start ? end - start : 0;
	if (len > NST_ARGS_MAX) {
		len = NST_ARGS_MAX;
		e->flags |= NST_F_ARGS_TRUNCATED;
	}
	barrier_var(len);
	if (len > NST_ARGS_MAX)
		len = 0;
	if (len && bpf_probe_read_user(b->data + n, len, (void *)start)) {
		e->flags |= NST_F_ARGS_UNREADABLE;
		len = 0;
	}
	e->args_len = len;
	emit(b, sizeof(*e) + n + len);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(nst_exit, struct task_struct *p)
{
	struct signal_struct *sig = BPF_CORE_READ(p, signal);
	__u32 tgid = BPF_CORE_READ(p, tgid);
	struct task_struct *leader;
	struct event e = {};

	/* One event per process: the last thread out reports it. */
	if (BPF_CORE_READ(sig, live.counter) != 0)
		return 0;
	if (nst_filter_pids) {
		if (!bpf_map_lookup_elem(&traced, &tgid))
			return 0;
		bpf_map_delete_elem(&traced, &tgid);
	}
	if (!nst_want_exit)
		return 0;

	fill_task(&e, p);
	e.kind = NST_EV_EXIT;
	leader = BPF_CORE_READ(p, group_leader);
	e.duration_ns = e.ts_ns - BPF_CORE_READ(leader, start_time);
	if (BPF_CORE_READ(sig, flags) & SIGNAL_GROUP_EXIT)
		e.exit_status = BPF_CORE_READ(sig, group_exit_code);
	else
		e.exit_status = BPF_CORE_READ(p, exit_code);
	if (ns_wanted(&e))
		emit(&e, sizeof(e));
	return 0;
}

/*
 * The namespace syscalls have no tracepoints of their own, and kprobes and
 * fentry are not always there (kernels without CONFIG_KPROBES, sandboxes
 * that refuse BPF trampolines), so they are caught at the raw syscall
 * tracepoints. The first thing each program does is compare the syscall
 * number, which keeps the cost for every other syscall to a few
 * instructions. Numbers are per architecture; the loader sets them.
 */
const volatile __s64 nst_nr_clone = -1;
const volatile __s64 nst_nr_clone3 = -1;
const volatile __s64 nst_nr_unshare = -1;
const volatile __s64 nst_nr_setns = -1;
const volatile __u32 nst_want_unshare = 0;
const volatile __u32 nst_want_setns = 0;

/* A syscall argument, from the registers of x86_64 or arm64. */
static __always_inline unsigned long syscall_arg(struct pt_regs *regs, int n)
{
	struct pt_regs___x86 *x86 = (void *)regs;
	struct pt_regs___arm64 *arm64 = (void *)regs;

	if (bpf_core_field_exists(x86->di))
		return n == 0 ? BPF_CORE_READ(x86, di) : BPF_CORE_READ(x86, si);
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

static __always_inline void pending_start(__u32 kind, __u64 flags_raw, int fd)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct event e = {};

	if (!pid_traced(id >> 32))
		return;
	e.kind = kind;
	e.flags_raw = flags_raw;
	e.fd = fd;
	read_ns(current_task(), e.ns_other);
	bpf_map_update_elem(&pending, &tid, &e, BPF_ANY);
}

static __always_inline void pending_finish(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct event *e = bpf_map_lookup_elem(&pending, &tid);

	if (!e)
		return;
	fill_task(e, current_task());
	e->ret = ret;
	if (ns_wanted(e))
		emit(e, sizeof(*e));
	bpf_map_delete_elem(&pending, &tid);
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
static __always_inline void setns_enter(int fd, int nstype)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct file *f;
	struct inode *ino;
	struct event *e;
	struct pid *pid;
	void *priv;

	pending_start(NST_EV_SETNS, (__u32)nstype, fd);
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

/*
 * clone flags are not visible at sched_process_fork, so a clone that
 * creates namespaces is noted here; the fork tracepoint then reports the
 * birth as a clone event.
 */
static __always_inline void clone_enter(__u64 flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;

	if (!(flags & NST_CLONE_NEW_MASK) || (flags & CLONE_THREAD) || !pid_traced(id >> 32))
		return;
	bpf_map_update_elem(&clone_flags, &tid, &flags, BPF_ANY);
}

static __always_inline void clone_exit(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *flags = bpf_map_lookup_elem(&clone_flags, &tid);
	struct event e = {};

	if (!flags)
		return;
	/* A failed clone has no fork to report it: do it here. */
	if (ret < 0) {
		fill_task(&e, current_task());
		e.kind = NST_EV_CLONE;
		e.flags_raw = *flags;
		e.ret = ret;
		if (ns_wanted(&e))
			emit(&e, sizeof(e));
	}
	bpf_map_delete_elem(&clone_flags, &tid);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(nst_sys_enter, struct pt_regs *regs, long id)
{
	__u64 flags = 0;

	if (id == nst_nr_clone) {
		if (nst_want_clone)
			clone_enter(syscall_arg(regs, 0));
	} else if (id == nst_nr_clone3) {
		/* clone3(struct clone_args *args, size): flags come first. */
		if (nst_want_clone) {
			bpf_probe_read_user(&flags, sizeof(flags), (void *)syscall_arg(regs, 0));
			clone_enter(flags);
		}
	} else if (id == nst_nr_unshare) {
		if (nst_want_unshare)
			pending_start(NST_EV_UNSHARE, syscall_arg(regs, 0), -1);
	} else if (id == nst_nr_setns) {
		if (nst_want_setns)
			setns_enter(syscall_arg(regs, 0), syscall_arg(regs, 1));
	}
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(nst_sys_exit, struct pt_regs *regs, long ret)
{
	long id = syscall_nr(regs);

	if (id == nst_nr_clone || id == nst_nr_clone3) {
		if (nst_want_clone)
			clone_exit(ret);
	} else if (id == nst_nr_unshare || id == nst_nr_setns) {
		pending_finish(ret);
	}
	return 0;
}
