/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The event record: the contract between nstrace's BPF programs and its Go
 * side. bpf2go generates the Go mirror (nstraceEvent) and the enums from
 * this definition, so the layout is written once. Fields are fixed width,
 * naturally aligned, and padded explicitly.
 */
#ifndef __NSTRACE_H
#define __NSTRACE_H

#define NST_COMM_LEN 16
/* Bytes of exec filename kept; PATH_MAX. */
#define NST_FILENAME_MAX 4096
/* Bytes of the exec argument vector kept (NUL-separated, as in memory). */
#define NST_ARGS_MAX 32768
/*
 * Bytes kept of the kernfs names of the process's cgroup and of its
 * parent: a container runtime names one or the other after the container
 * ("docker-<64 hex>.scope", "kubepods-besteffort-pod<uid>.slice").
 */
#define NST_CGROUP_NAME_LEN 128

enum nst_kind {
	NST_EV_FORK = 1,
	NST_EV_EXEC = 2,
	NST_EV_EXIT = 3,
	NST_EV_CLONE = 4,
	NST_EV_UNSHARE = 5,
	NST_EV_SETNS = 6,
	/* child_pid could not join the traced set: its subtree is not followed. */
	NST_EV_UNTRACKED = 7,
	/* struct cgroup_event: the names of a cgroup, before its first event */
	NST_EV_CGROUP = 8,
	/* struct wake_event: wakes a reader that sleeps; carries nothing */
	NST_EV_WAKE = 9,
	/* a task renamed (prctl PR_SET_NAME, /proc/PID/comm): comm to comm_new */
	NST_EV_COMM = 10,
	/* real or effective uid or gid changed: old_* to uid, euid, gid, egid */
	NST_EV_UID = 11,
	/* setsid: ret is the new session id */
	NST_EV_SID = 12,
	/* ptrace attach, seize, traceme or detach: flags_raw is the request */
	NST_EV_PTRACE = 13,
};

/* How many ancestors an event carries when asked (nst_ancestors). */
#define NST_ANCESTORS_MAX 8

/* One ancestor of the process, after the record (event.ancestors). */
struct ancestor {
	__u32 pid;    /* thread group id, host */
	__u32 nspid;  /* in its own pid namespace */
	__u32 pid_ns; /* that pid namespace's inode */
	char comm[NST_COMM_LEN];
};

/* Why an event could not be delivered: an index into nst_lost. */
enum nst_lost_reason {
	NST_LOST_RINGBUF = 0,     /* the ring buffer was full */
	NST_LOST_PENDING = 1,     /* too many unshare/setns calls in flight */
	NST_LOST_CLONE_FLAGS = 2, /* too many clones in flight: birth shown as fork */
	NST_LOST_TRACKED = 3,     /* the traced set was full */
	NST_LOST_REASONS = 4,
};

/* Index of each namespace in event.ns, in /proc/PID/ns order. */
enum nst_ns {
	NST_NS_CGROUP = 0,
	NST_NS_IPC = 1,
	NST_NS_MNT = 2,
	NST_NS_NET = 3,
	NST_NS_PID = 4,
	NST_NS_PID_FOR_CHILDREN = 5,
	NST_NS_TIME = 6,
	NST_NS_TIME_FOR_CHILDREN = 7,
	NST_NS_USER = 8,
	NST_NS_UTS = 9,
	NST_NS_COUNT = 10,
};

/* event.flags */
enum nst_flag {
	NST_F_ARGS_TRUNCATED = 1 << 0,
	NST_F_FILENAME_TRUNCATED = 1 << 1,
	NST_F_ARGS_UNREADABLE = 1 << 2,
	NST_F_TARGET_PIDFD = 1 << 3,
	NST_F_TARGET_NSFS = 1 << 4,
	NST_F_COMPAT = 1 << 5, /* a 32-bit (compat) system call */
	NST_F_ANCESTORS = 1 << 6, /* NST_ANCESTORS_MAX struct ancestor follow */
	/*
	 * fork: the child's namespaces are its parent's, but its pid
	 * namespace, which is the parent's for children; ns_other is not
	 * carried.
	 */
	NST_F_CHILD_NS_INHERITED = 1 << 7,
};

/* What a system call is to nstrace: the loader's table by number. */
enum nst_syscall_class {
	NST_SYS_NONE = 0,
	NST_SYS_CLONE = 1,
	NST_SYS_CLONE3 = 2,
	NST_SYS_UNSHARE = 3,
	NST_SYS_SETNS = 4,
	NST_SYS_EXECVE = 5,
	NST_SYS_EXECVEAT = 6,
	NST_SYS_CRED = 7, /* the set*id family */
	NST_SYS_SETSID = 8,
	NST_SYS_PTRACE = 9,
};

/*
 * The cgroup v1 controllers whose hierarchy can name a process's cgroup
 * where its cgroup v2 one is the root (nst_cgroup_v1): the loader picks
 * one mounted as a v1 hierarchy.
 */
enum nst_v1_controller {
	NST_CGV1_NONE = 0,
	NST_CGV1_PIDS = 1,
	NST_CGV1_MEMORY = 2,
	NST_CGV1_CPU = 3,
	NST_CGV1_CPUACCT = 4,
	NST_CGV1_DEVICES = 5,
	NST_CGV1_FREEZER = 6,
	NST_CGV1_BLKIO = 7,
	NST_CGV1_CPUSET = 8,
};

/*
 * A cgroup as records and tables name it (cgroup_id): its kernfs id, with
 * this bit set for a cgroup of the v1 hierarchy, whose ids are another
 * space than v2's. No kernfs id has it: an id's low 32 bits are an
 * inode number below 2^31, its high ones a count of the times those
 * wrapped.
 */
enum nst_cgroup_key {
	NST_CGROUP_V1_BIT = 63,
};
#define NST_CGROUP_V1 (1ULL << NST_CGROUP_V1_BIT)

/* System call numbers below this are classified. */
#define NST_SYSCALLS_MAX 512

/*
 * The fields every record has come first; then those of exec, exit and
 * untracked records; then fork's and clone's; then the rest. A record
 * carries struct event only up to the end of its kind's fields
 * (NST_REC_SHORT, NST_REC_FORK, or all of it): the lines it does not
 * carry are lines the kernel does not write. Records that carry
 * ancestors (NST_F_ANCESTORS) carry all of it.
 */
struct event {
	__u64 ts_ns;       /* CLOCK_BOOTTIME, ns: keeps counting in suspend */
	__u64 cgroup_id;   /* the cgroup's key (enum nst_cgroup_key) */
	/*
	 * Events lost so far, all reasons together, when this record was
	 * written: a change from the previous record says some were lost
	 * in between (the counts by reason are in nst_lost).
	 */
	__u64 lost_seq;
	__u32 kind;        /* enum nst_kind */
	__u32 flags;       /* enum nst_flag */
	__u32 pid;         /* thread group id, host pid namespace */
	__u32 tid;         /* thread id, host pid namespace */
	__u32 ppid;        /* parent's thread group id, host */
	__u32 nspid;       /* thread group id in the process's own pid namespace */
	__u32 uid;         /* real uid, host user namespace */
	__u32 gid;         /* real gid, host user namespace */
	__u32 euid;        /* effective uid, host user namespace */
	__u32 egid;        /* effective gid */
	__u32 ns[NST_NS_COUNT]; /* namespace inodes of the process, enum nst_ns */
	char comm[NST_COMM_LEN];
	/* exec, exit, untracked: */
	__u64 duration_ns; /* exit: process lifetime, ns */
	__s64 ret;         /* clone, unshare, setns: return value or -errno */
	__u32 exit_status; /* exit: wait(2) status */
	__u32 child_pid;   /* fork, clone, untracked: child's pid, host */
	__u32 child_nspid; /* fork, clone: child's pid in its own pid namespace */
	__u32 filename_len; /* exec: bytes of filename at the start of the tail */
	__u32 args_len;    /* exec: bytes of NUL-separated argv after it */
	__u32 ancestors;   /* valid entries of the struct ancestor tail */
	/* fork, clone: */
	__u64 flags_raw;   /* clone, unshare: clone flags; setns: nstype */
	/*
	 * fork, clone: the child's namespace inodes;
	 * setns, unshare: the caller's before the call.
	 */
	__u32 ns_other[NST_NS_COUNT];
	/* the others: */
	__s32 fd;          /* setns: the fd argument */
	__u32 target_ns;   /* setns: inode of the namespace behind an nsfs fd */
	__u32 target_type; /* setns: CLONE_NEW* type of that namespace */
	__u32 target_pid;  /* setns: host pid behind a pidfd */
	__u32 old_uid;     /* uid: the ids before the change */
	__u32 old_euid;
	__u32 old_gid;
	__u32 old_egid;
	char comm_new[NST_COMM_LEN]; /* comm: the new name */
};

/* How much of struct event exec, exit and untracked records carry. */
#define NST_REC_SHORT __builtin_offsetof(struct event, flags_raw)
/* How much fork and clone records carry (but NST_F_CHILD_NS_INHERITED). */
#define NST_REC_FORK __builtin_offsetof(struct event, fd)

/*
 * The kernfs names of a cgroup and of its parent, sent once per cgroup
 * (until the kernel's table of cgroups sent forgets it) before the first
 * event that names the cgroup: the names are read while the cgroup exists,
 * however soon it goes. Laid out like struct event up to kind.
 */
struct cgroup_event {
	__u64 ts_ns;
	__u64 cgroup_id; /* the cgroup's key (enum nst_cgroup_key) */
	__u64 lost_seq;
	__u32 kind; /* NST_EV_CGROUP */
	__u32 _pad;
	char name[NST_CGROUP_NAME_LEN];
	char parent[NST_CGROUP_NAME_LEN];
};

/* Laid out like struct event up to kind. */
struct wake_event {
	__u64 _unused[3];
	__u32 kind; /* NST_EV_WAKE */
	__u32 _pad;
};

/*
 * The host's namespaces: those of the kernel's first task; and the
 * objects that hold them, which live as long as the kernel (the initial
 * nsproxy, user namespace and css_set): a task that points at one of
 * them is in the host's namespaces (or root cgroup) without a look at
 * them.
 */
struct host_ns {
	__u32 ns[NST_NS_COUNT];
	__u32 found; /* the walk reached the first task */
	__u32 _pad;
	__u64 nsproxy;   /* address of the initial struct nsproxy */
	__u64 user_ns;   /* ... struct user_namespace */
	__u64 css_set;   /* ... struct css_set */
	__u64 cgroup_id; /* its cgroup v2 id (the root's) */
};

#endif /* __NSTRACE_H */
