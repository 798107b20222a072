package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrNotPartition means the device backing a filesystem is not a partition
// of a disk (a whole disk, a loop device without partitions, ...).
var ErrNotPartition = errors.New("blockdev: not a partition of a disk")

// Backing is the partition under a filesystem, found through sysfs.
type Backing struct {
	Disk      string // whole-disk device node, e.g. /dev/nvme0n1 (under sysRoot)
	Partition string // partition name, e.g. nvme0n1p4
	Number    int    // partition number, e.g. 4
	Mapper    string // the device-mapper device above it (dm-0), if any
}

// ResolveBacking finds the disk partition behind block device major:minor,
// looking through one device-mapper layer (the dm-verity device over the
// root partition) to its first lower device. Everything is read under
// sysRoot ("/" on a host, a fake tree in tests):
//
//	sys/dev/block/MAJ:MIN           -> the device's sysfs directory
//	  dm/                            present on device-mapper devices
//	  slaves/<name>                  its lower devices
//	sys/class/block/<name>/partition the partition number
//	  ..                             (resolved) the whole disk's directory
func ResolveBacking(sysRoot string, major, minor uint32) (Backing, error) {
	var b Backing
	dev := filepath.Join(sysRoot, "sys", "dev", "block", fmt.Sprintf("%d:%d", major, minor))
	dir, err := filepath.EvalSymlinks(dev)
	if err != nil {
		return b, fmt.Errorf("blockdev: resolving %s: %w", dev, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dm")); err == nil {
		b.Mapper = filepath.Base(dir)
		ents, err := os.ReadDir(filepath.Join(dir, "slaves"))
		if err != nil {
			return b, fmt.Errorf("blockdev: lower devices of %s: %w", b.Mapper, err)
		}
		names := make([]string, 0, len(ents))
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if len(names) == 0 {
			return b, fmt.Errorf("blockdev: device-mapper device %s has no lower devices", b.Mapper)
		}
		sort.Strings(names)
		if dir, err = filepath.EvalSymlinks(filepath.Join(sysRoot, "sys", "class", "block", names[0])); err != nil {
			return b, fmt.Errorf("blockdev: resolving lower device %s: %w", names[0], err)
		}
	}
	b.Partition = filepath.Base(dir)
	raw, err := os.ReadFile(filepath.Join(dir, "partition"))
	if errors.Is(err, os.ErrNotExist) {
		return b, fmt.Errorf("%w: %s", ErrNotPartition, b.Partition)
	} else if err != nil {
		return b, err
	}
	if b.Number, err = strconv.Atoi(strings.TrimSpace(string(raw))); err != nil || b.Number < 1 {
		return b, fmt.Errorf("blockdev: %s: bad partition number %q", b.Partition, raw)
	}
	b.Disk = filepath.Join(sysRoot, "dev", filepath.Base(filepath.Dir(dir)))
	return b, nil
}

// ErrNoPartitionNode means sysfs lists no partition with the asked number
// on a disk.
var ErrNoPartitionNode = errors.New("blockdev: no such partition on the disk")

// PartitionNode returns the device node of partition n of the whole disk
// at diskPath (e.g. /dev/sda and 3 give /dev/sda3, /dev/nvme0n1 and 3 give
// /dev/nvme0n1p3, /dev/loop0 and 3 give /dev/loop0p3). The name is not
// guessed from the disk's name: the disk's children are looked up in
// sysfs, under sysRoot ("/" on a host, a fake tree in tests):
//
//	sys/class/block/<disk>             -> the disk's sysfs directory
//	  <child>/partition                 the child's partition number
//
// and the node is sysRoot/dev/<child>. diskPath may be a symbolic link
// (/dev/disk/by-id/...); its target's name is the disk's name. The error
// for a number sysfs does not list wraps ErrNoPartitionNode.
func PartitionNode(sysRoot, diskPath string, n int) (string, error) {
	if n < 1 {
		return "", fmt.Errorf("blockdev: partition number %d: partitions are numbered from 1", n)
	}
	real, err := filepath.EvalSymlinks(diskPath)
	if err != nil {
		return "", fmt.Errorf("blockdev: resolving %s: %w", diskPath, err)
	}
	name := filepath.Base(real)
	dir, err := filepath.EvalSymlinks(filepath.Join(sysRoot, "sys", "class", "block", name))
	if err != nil {
		return "", fmt.Errorf("blockdev: %s is not a block device known to sysfs: %w", diskPath, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		return "", fmt.Errorf("blockdev: %s is itself a partition, not a whole disk", diskPath)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("blockdev: listing %s: %w", dir, err)
	}
	for _, e := range ents {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name(), "partition"))
		if err != nil {
			continue // not a partition (queue/, holders/, a plain file, ...)
		}
		if num, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && num == n {
			return filepath.Join(sysRoot, "dev", e.Name()), nil
		}
	}
	return "", fmt.Errorf("%w: %s has no partition %d in sysfs", ErrNoPartitionNode, diskPath, n)
}

// SameFile reports whether paths a and b name the same disk: the same file
// (after following symbolic links) or two device nodes of the same block
// device. It is false when either cannot be looked at.
func SameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false
	}
	if os.SameFile(fa, fb) {
		return true
	}
	ra, okA := blockRdev(fa)
	rb, okB := blockRdev(fb)
	return okA && okB && ra == rb
}
