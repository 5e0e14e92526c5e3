// SPDX-License-Identifier: Apache-2.0

package probe

// ForgetCgroups does for the kernel side what the decoder does for every
// cgroup whose names it drops.
func (p *Probe) ForgetCgroups(ids []uint64) { p.forgetCgroups(ids) }

// CgroupSent reports whether the kernel side holds a cgroup's names as
// sent.
func (p *Probe) CgroupSent(id uint64) bool {
	var one uint8
	return p.maps.cgroupsSent.Lookup(id, &one) == nil
}
