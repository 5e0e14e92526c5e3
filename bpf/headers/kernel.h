/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The kernel types nstrace reads, trimmed to the fields it touches. Every
 * access is relocated by name at load time (CO-RE), so only names and
 * widths must match the running kernel, not offsets. Our own types live
 * outside the preserve_access_index block.
 */
#ifndef __NSTRACE_KERNEL_H
#define __NSTRACE_KERNEL_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef int pid_t;
typedef unsigned int uid_t;
typedef unsigned int gid_t;
typedef _Bool bool;
enum { false = 0, true = 1 };

/* UAPI constants from <linux/bpf.h>. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};


/* <linux/sched.h> clone flags. */
#define CLONE_VM 0x00000100
#define CLONE_FS 0x00000200
#define CLONE_FILES 0x00000400
#define CLONE_THREAD 0x00010000
#define CLONE_NEWNS 0x00020000
#define CLONE_SYSVSEM 0x00040000
#define CLONE_NEWCGROUP 0x02000000
#define CLONE_NEWUTS 0x04000000
#define CLONE_NEWIPC 0x08000000
#define CLONE_NEWUSER 0x10000000
#define CLONE_NEWPID 0x20000000
#define CLONE_NEWNET 0x40000000
#define CLONE_NEWTIME 0x00000080

/* include/linux/sched/signal.h */
#define SIGNAL_GROUP_EXIT 0x00000004

/* arch/x86/include/asm/thread_info.h: a 32-bit system call is running. */
#define TS_COMPAT 0x0002
/* arch/arm64/include/asm/thread_info.h: a 32-bit task. */
#define TIF_32BIT 22

/* include/uapi/linux/magic.h */
#define NSFS_MAGIC 0x6e736673
#define PIDFS_MAGIC 0x50494446

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

typedef struct {
	int counter;
} atomic_t;

typedef struct {
	uid_t val;
} kuid_t;

typedef struct {
	gid_t val;
} kgid_t;

struct proc_ns_operations {
	int type;
};

struct ns_common {
	unsigned int inum;
	const struct proc_ns_operations *ops;
};

/*
 * Linux 6.18 moved the namespace type from ns->ops->type into ns_common
 * itself ("ns: add ns_common_type()").
 */
struct ns_common___ns_type {
	int ns_type;
};

struct uts_namespace {
	struct ns_common ns;
};

struct ipc_namespace {
	struct ns_common ns;
};

struct mnt_namespace {
	struct ns_common ns;
};

struct pid_namespace {
	struct ns_common ns;
};

struct net {
	struct ns_common ns;
};

struct time_namespace {
	struct ns_common ns;
};

struct cgroup_namespace {
	struct ns_common ns;
};

struct user_namespace {
	struct ns_common ns;
};

struct nsproxy {
	struct uts_namespace *uts_ns;
	struct ipc_namespace *ipc_ns;
	struct mnt_namespace *mnt_ns;
	struct pid_namespace *pid_ns_for_children;
	struct net *net_ns;
	struct time_namespace *time_ns;
	struct time_namespace *time_ns_for_children;
	struct cgroup_namespace *cgroup_ns;
};

struct upid {
	int nr;
	struct pid_namespace *ns;
};

struct pid {
	unsigned int level;
	struct upid numbers[1];
};

struct cred {
	kuid_t uid;
	kgid_t gid;
	kuid_t euid;
	kgid_t egid;
	struct user_namespace *user_ns;
};

/*
 * A cgroup's directory in its hierarchy. id is the directory's inode
 * number, unique within the hierarchy (each has its own kernfs root): a
 * u64 since Linux 5.5 ("kernfs: convert kernfs_node->id from union
 * kernfs_node_id to u64"), before nstrace's oldest kernel.
 */
struct kernfs_node {
	struct kernfs_node *__parent;
	const char *name;
	u64 id;
};

/*
 * Linux 6.15 renamed kernfs_node::parent to __parent ("kernfs: Use RCU to
 * access kernfs_node::parent").
 */
struct kernfs_node___parent {
	struct kernfs_node *parent;
};

/* The hierarchy a cgroup is of: hierarchy_id, /proc/PID/cgroup's first field. */
struct cgroup_root {
	int hierarchy_id;
};

struct cgroup {
	struct kernfs_node *kn;
	struct cgroup_root *root;
};

/* A controller's state in one cgroup: of the hierarchy it is bound to. */
struct cgroup_subsys_state {
	struct cgroup *cgroup;
};

/*
 * The cgroups of a task: its cgroup v2 one (dfl_cgrp), and each
 * controller's (subsys[], indexed by enum cgroup_subsys_id, as many as
 * the kernel was built with), which is a cgroup v1 hierarchy's for a
 * controller mounted there.
 */
struct css_set {
	struct cgroup_subsys_state *subsys[1];
	struct cgroup *dfl_cgrp;
};

struct signal_struct {
	atomic_t live;
	int group_exit_code;
	unsigned int flags;
};

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
};

struct super_block {
	unsigned long s_magic;
};

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
	void *i_private;
};

struct qstr {
	const unsigned char *name;
};

struct dentry {
	struct qstr d_name;
};

struct path {
	struct dentry *dentry;
};

struct file {
	struct path f_path;
	struct inode *f_inode;
	void *private_data;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

/* The 32-bit system call marks: x86 keeps a status word ... */
struct thread_info___x86 {
	u32 status;
};

/* ... arm64 a flag. */
struct thread_info___arm64 {
	unsigned long flags;
};

struct thread_info {
	unsigned long flags;
};

struct task_struct {
	struct thread_info thread_info;
	unsigned int flags;
	int exit_code;
	unsigned in_execve: 1;
	pid_t pid;
	pid_t tgid;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct pid *thread_pid;
	u64 start_time;
	u64 start_boottime;
	const struct cred *real_cred;
	char comm[16];
	struct files_struct *files;
	struct nsproxy *nsproxy;
	struct signal_struct *signal;
	struct css_set *cgroups;
	struct mm_struct *mm;
};

struct linux_binprm {
	const char *filename;
};

struct kernel_clone_args {
	u64 flags;
};

struct pt_regs {
	long __unused;
};

/* Syscall registers on x86_64 (bx, cx: a 32-bit call's arguments) ... */
struct pt_regs___x86 {
	unsigned long bx;
	unsigned long cx;
	unsigned long di;
	unsigned long si;
	unsigned long orig_ax;
};

/* ... and on arm64 (a 32-bit call's arguments in the same registers). */
struct pt_regs___arm64 {
	u64 regs[31];
	s32 syscallno;
};

#pragma clang attribute pop

/*
 * The controllers' indexes in css_set.subsys[] (include/linux/cgroup_subsys.h):
 * a kernel's values depend on the controllers it was built with, so they
 * are read from its BTF (bpf_core_enum_value), never from here. blkio's
 * is io_cgrp_id.
 */
enum cgroup_subsys_id {
	cpuset_cgrp_id,
	cpu_cgrp_id,
	cpuacct_cgrp_id,
	io_cgrp_id,
	memory_cgrp_id,
	devices_cgrp_id,
	freezer_cgrp_id,
	pids_cgrp_id,
};

#endif /* __NSTRACE_KERNEL_H */
