//go:build !linux

package blockdev

import (
	"errors"
	"os"
)

const exclusiveFlag = os.O_EXCL

func blockGeometry(*os.File) (int64, int, error) {
	return 0, 0, errors.New("block devices are supported on Linux only")
}

// RereadPartitions is a no-op off Linux.
func (d *File) RereadPartitions() error { return nil }

// DeviceOf is supported on Linux only.
func DeviceOf(string) (uint32, uint32, error) {
	return 0, 0, errors.New("finding the device of a filesystem is supported on Linux only")
}

// blockRdev: device numbers are compared on Linux only.
func blockRdev(os.FileInfo) (uint64, bool) { return 0, false }

const directFlag = 0

func (d *File) startWriteback(int64, int64) {}
