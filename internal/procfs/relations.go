// SPDX-License-Identifier: Apache-2.0

package procfs

import (
	"os/user"
	"strconv"

	"golang.org/x/sys/unix"
)

// Relations are a namespace's places in the kernel's hierarchies, as
// ioctl(2) on a namespace file tells them (ioctl_nsfs(2)).
type Relations struct {
	// Parent is the pid or user namespace this one nests in; 0 for other
	// types, and where the parent is out of the reader's sight.
	Parent uint64
	// Owner is the user namespace that owns this one (for a user
	// namespace, its parent); 0 for the initial user namespace.
	Owner uint64
}

// ReadRelations asks the kernel about the namespace at path: a
// /proc/PID/ns link or a bind mount of one.
func ReadRelations(path string) (Relations, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Relations{}, err
	}
	defer unix.Close(fd)
	return Relations{Parent: ioctlInode(fd, unix.NS_GET_PARENT), Owner: ioctlInode(fd, unix.NS_GET_USERNS)}, nil
}

// ioctlInode is the inode of the namespace an NS_GET_* ioctl returns, or
// 0 if the kernel gives none (EPERM at the top, EINVAL for a type without
// parents).
func ioctlInode(fd int, req uint) uint64 {
	nfd, err := unix.IoctlRetInt(fd, req)
	if err != nil {
		return 0
	}
	defer unix.Close(nfd)
	var st unix.Stat_t
	if unix.Fstat(nfd, &st) != nil {
		return 0
	}
	return st.Ino
}

// UserName is uid's login name where the system's user database has
// one, else the number.
func UserName(uid uint32) string {
	s := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(s); err == nil {
		return u.Username
	}
	return s
}
