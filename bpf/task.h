/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Reading a task's identity into an event. nstrace.bpf.c includes this
 * twice: with NST_R a direct load, for the BTF-typed task pointers that
 * tp_btf programs receive (the verifier guards each load, no helper call),
 * and with NST_R a probe read, for the current task of the syscall hooks.
 * NST_FN names each copy.
 */

/*
 * The pid of t's thread group in its own (innermost) pid namespace, and
 * that namespace's inode. numbers[] is indexed by the pid's level, which
 * only a probe read can follow.
 */
static __always_inline __u32 NST_FN(own_pid)(struct task_struct *t, __u32 *ns_inum)
{
	struct pid *p = NST_R(t, group_leader, thread_pid);
	unsigned int level = NST_R(p, level);
	struct upid up = {};

	bpf_core_read(&up, sizeof(up), &p->numbers[level]);
	*ns_inum = BPF_CORE_READ(up.ns, ns.inum);
	return up.nr;
}

/*
 * The namespace inodes of t, in enum nst_ns order; returns the pid of t's
 * thread group in its own pid namespace.
 */
static __always_inline __u32 NST_FN(read_ns)(struct task_struct *t, __u32 *ns)
{
	struct nsproxy *np = NST_R(t, nsproxy);
	const struct cred *cred = NST_R(t, real_cred);
	struct user_namespace *user_ns = NST_R(cred, user_ns);

	if (user_ns && (__u64)user_ns == nst_known.user_ns)
		ns[NST_NS_USER] = nst_known.ns[NST_NS_USER];
	else
		/* /proc/PID/ns/user follows the objective credentials. */
		ns[NST_NS_USER] = NST_R(user_ns, ns.inum);
	/*
	 * The initial nsproxy holds the host's namespaces for as long as the
	 * kernel runs. Its pid namespace for children is the initial one, so
	 * t is in it too (a task's pid namespace for children is its own or
	 * one below): t's own pid is its host pid.
	 */
	if (np && (__u64)np == nst_known.nsproxy) {
		for (int i = 0; i < NST_NS_COUNT; i++)
			if (i != NST_NS_USER)
				ns[i] = nst_known.ns[i];
		return NST_R(t, tgid);
	}
	/* nsproxy is NULL only once an exiting task has left its namespaces. */
	if (np) {
		ns[NST_NS_CGROUP] = NST_R(np, cgroup_ns, ns.inum);
		ns[NST_NS_IPC] = NST_R(np, ipc_ns, ns.inum);
		ns[NST_NS_MNT] = NST_R(np, mnt_ns, ns.inum);
		ns[NST_NS_NET] = NST_R(np, net_ns, ns.inum);
		ns[NST_NS_PID_FOR_CHILDREN] = NST_R(np, pid_ns_for_children, ns.inum);
		ns[NST_NS_UTS] = NST_R(np, uts_ns, ns.inum);
		/* Time namespaces arrived in Linux 5.6. */
		if (bpf_core_field_exists(np->time_ns)) {
			ns[NST_NS_TIME] = NST_R(np, time_ns, ns.inum);
			ns[NST_NS_TIME_FOR_CHILDREN] = NST_R(np, time_ns_for_children, ns.inum);
		}
	}
	return NST_FN(own_pid)(t, &ns[NST_NS_PID]);
}

/*
 * The parent of a cgroup's kernfs node; NULL for the root. Linux 6.15
 * renamed kernfs_node::parent to __parent ("kernfs: Use RCU to access
 * kernfs_node::parent").
 */
static __always_inline struct kernfs_node *NST_FN(kn_parent)(struct kernfs_node *kn)
{
	struct kernfs_node___parent *old = (void *)kn;

	if (bpf_core_field_exists(kn->__parent))
		return NST_R(kn, __parent);
	return NST_R(old, parent);
}

/*
 * The kernfs node of the cgroup that identifies a task in css_set cs,
 * and its key (enum nst_cgroup_key): its cgroup v2 one; or, where that is
 * the v2 root and nst_cgroup_v1 names a controller, that controller's
 * cgroup, in its v1 hierarchy (nst_cgroup_v1_hierarchy, no other),
 * unless that is its root as well.
 */
static __always_inline struct kernfs_node *NST_FN(task_cgroup)(struct css_set *cs, __u64 *key)
{
	struct kernfs_node *kn = NST_R(cs, dfl_cgrp, kn), *v1;
	__u64 id = NST_R(kn, id);
	struct cgroup *cg;
	bool v2_root;
	int ssid;

	*key = id;
	ssid = cgroup_v1_subsys();
	if (ssid < 0)
		return kn;
	/* The v2 root's id is the first task's, where the loader knows it. */
	if (nst_known.found)
		v2_root = id == nst_known.cgroup_id;
	else
		v2_root = !NST_FN(kn_parent)(kn);
	if (!v2_root)
		return kn;
	cg = NST_R(cs, subsys[ssid], cgroup);
	if (!cg || NST_R(cg, root, hierarchy_id) != nst_cgroup_v1_hierarchy)
		return kn;
	v1 = NST_R(cg, kn);
	/* In the v1 root too: the v2 root says as much, as it always has. */
	if (!v1 || !NST_FN(kn_parent)(v1))
		return kn;
	*key = NST_R(v1, id) | NST_CGROUP_V1;
	return v1;
}

/*
 * The key (enum nst_cgroup_key) of the cgroup that identifies t
 * (task_cgroup); the first time the key is seen, a record with the
 * cgroup's kernfs name and its parent's goes ahead of the event.
 */
static __always_inline __u64 NST_FN(note_cgroup)(struct task_struct *t)
{
	struct css_set *cs = NST_R(t, cgroups);
	struct kernfs_node *kn, *parent;
	struct cgroup_event *c;
	bool host = cs && (__u64)cs == nst_known.css_set;
	__u8 one = 1;
	__u64 id;

	/* The initial css_set is the roots' in every hierarchy, for good. */
	if (host) {
		id = nst_host_cgroup;
		if (id && cgroup_recent(id))
			return id;
	}
	kn = NST_FN(task_cgroup)(cs, &id);
	if (host)
		nst_host_cgroup = id;
	if (cgroup_recent(id))
		return id;
	c = bpf_ringbuf_reserve(&events, sizeof(*c), 0);
	if (!c) {
		count_lost(NST_LOST_RINGBUF);
		return id;
	}
	__builtin_memset(c, 0, sizeof(*c));
	c->kind = NST_EV_CGROUP;
	c->cgroup_id = id;
	c->lost_seq = nst_lost_seq;
	parent = NST_FN(kn_parent)(kn);
	bpf_probe_read_kernel_str(c->name, sizeof(c->name), NST_R(kn, name));
	/* The root has no parent. */
	if (parent)
		bpf_probe_read_kernel_str(c->parent, sizeof(c->parent), NST_R(parent, name));
	bpf_ringbuf_submit(c, BPF_RB_NO_WAKEUP);
	wake_reader();
	bpf_map_update_elem(&cgroups_sent, &id, &one, BPF_ANY);
	cgroup_remember(id);
	return id;
}

/*
 * Fill the identity of t, the task an event is about, but for its
 * namespaces (read_ns, which callers read first to filter on them) and
 * its cgroup (note_cgroup, which must come before the event is reserved).
 */
static __always_inline void NST_FN(fill_ident)(struct event *e, struct task_struct *t)
{
	struct task_struct *leader = NST_R(t, group_leader);

	/* Unless the caller knows when the event happened, it is now. */
	if (!e->ts_ns)
		e->ts_ns = bpf_ktime_get_boot_ns();
	e->lost_seq = nst_lost_seq;
	e->pid = NST_R(t, tgid);
	e->tid = NST_R(t, pid);
	e->ppid = NST_R(t, real_parent, tgid);
	e->uid = NST_R(t, real_cred, uid.val);
	e->gid = NST_R(t, real_cred, gid.val);
	e->euid = NST_R(t, real_cred, euid.val);
	e->egid = NST_R(t, real_cred, egid.val);
	NST_COMM(e->comm, leader);
}

/*
 * The parents of t, up to NST_ANCESTORS_MAX, into the slots after the
 * record; the first task (pid 0) ends the line.
 */
static __always_inline void NST_FN(fill_ancestors)(struct event *e, struct task_struct *t)
{
	struct ancestor *a = (void *)(e + 1);
	struct task_struct *p = NST_R(t, real_parent);
	__u32 n = 0;

	for (int i = 0; i < NST_ANCESTORS_MAX; i++) {
		if (!p || NST_R(p, pid) == 0)
			break;
		a[i].pid = NST_R(p, tgid);
		a[i].nspid = NST_FN(own_pid)(p, &a[i].pid_ns);
		NST_COMM(a[i].comm, p);
		n++;
		p = NST_R(p, real_parent);
	}
	e->ancestors = n;
	e->flags |= NST_F_ANCESTORS;
}
