package dm

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ControlPath is the device-mapper control device.
const ControlPath = "/dev/mapper/control"

// Control is an open device-mapper control device. Its methods may be
// called from several goroutines (each ioctl is independent).
type Control struct{ f *os.File }

// Open opens the control device at path ("" is ControlPath; devtmpfs
// creates it when dm-mod loads).
func Open(path string) (*Control, error) {
	if path == "" {
		path = ControlPath
	}
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dm: opening the control device: %w", err)
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		f.Close()
		return nil, fmt.Errorf("dm: %s is not a character device", path)
	}
	return &Control{f: f}, nil
}

// Close closes the control device.
func (c *Control) Close() error { return c.f.Close() }

// ioctl sends one command and returns the reply buffer and its header.
func (c *Control) ioctl(cmd uint, h *header, data []byte, size int) ([]byte, *header, error) {
	b := h.encode(data, size)
	conn, err := c.f.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	var errno unix.Errno
	if err := conn.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(ioctlNumber(cmd)), uintptr(unsafe.Pointer(&b[0])))
	}); err != nil {
		return nil, nil, err
	}
	if errno != 0 {
		return nil, nil, os.NewSyscallError("ioctl("+cmdNames[cmd]+")", errno)
	}
	rh, err := decodeHeader(b)
	if err != nil {
		return nil, nil, err
	}
	return b, rh, nil
}

// Version returns the kernel's device-mapper interface version.
func (c *Control) Version() ([3]uint32, error) {
	_, h, err := c.ioctl(cmdVersion, &header{}, nil, 0)
	if err != nil {
		return [3]uint32{}, err
	}
	return h.Version, nil
}

// Create makes device d and activates its table, as dm-init does at boot:
// DM_DEV_CREATE, DM_TABLE_LOAD (read-only when d.ReadOnly), then
// DM_DEV_SUSPEND without the suspend flag, which resumes the device and
// makes the table live. It returns the new device's numbers; the node
// /dev/dm-<minor> appears through devtmpfs. A failure after the create
// removes the device again.
func (c *Control) Create(d Device) (major, minor uint32, err error) {
	if err := checkName(d.Name, d.UUID); err != nil {
		return 0, 0, fmt.Errorf("dm: %w", err)
	}
	if len(d.Targets) == 0 {
		return 0, 0, fmt.Errorf("dm: device %s has no table", d.Name)
	}
	specs, err := encodeTargets(d.Targets)
	if err != nil {
		return 0, 0, err
	}
	h := &header{Name: d.Name, UUID: d.UUID}
	if d.Minor >= 0 {
		h.Flags |= flagPersistentDev
		h.Dev = unix.Mkdev(0, uint32(d.Minor))
	}
	_, rh, err := c.ioctl(cmdDevCreate, h, nil, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("dm: creating %s: %w", d.Name, err)
	}
	major, minor = unix.Major(rh.Dev), unix.Minor(rh.Dev)
	undo := func(err error) (uint32, uint32, error) {
		if rerr := c.Remove(d.Name); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return 0, 0, err
	}
	lh := &header{Name: d.Name, TargetCount: uint32(len(d.Targets))}
	if d.ReadOnly {
		lh.Flags |= flagReadOnly
	}
	if _, _, err := c.ioctl(cmdTableLoad, lh, specs, 0); err != nil {
		return undo(fmt.Errorf("dm: loading the table of %s (the kernel log says why): %w", d.Name, err))
	}
	if _, _, err := c.ioctl(cmdDevSuspend, &header{Name: d.Name}, nil, 0); err != nil {
		return undo(fmt.Errorf("dm: resuming %s: %w", d.Name, err))
	}
	return major, minor, nil
}

// Remove removes device name.
func (c *Control) Remove(name string) error {
	if _, _, err := c.ioctl(cmdDevRemove, &header{Name: name}, nil, 0); err != nil {
		return fmt.Errorf("dm: removing %s: %w", name, err)
	}
	return nil
}

// Table returns the live table of device name (as `dmsetup table` shows
// it: Info holds each target's parameters).
func (c *Control) Table(name string) ([]Status, error) {
	return c.tableStatus(name, flagStatusTable)
}

// Status returns the status of each target of device name (as `dmsetup
// status` shows it: for verity, Info is "V", or "C" once a corrupt block
// was found).
func (c *Control) Status(name string) ([]Status, error) {
	return c.tableStatus(name, 0)
}

func (c *Control) tableStatus(name string, flags uint32) ([]Status, error) {
	for size := 16 << 10; size <= 4<<20; size *= 4 {
		b, h, err := c.ioctl(cmdTableStatus, &header{Name: name, Flags: flags}, nil, size)
		if err != nil {
			return nil, fmt.Errorf("dm: reading the table of %s: %w", name, err)
		}
		if h.Flags&flagBufferFull != 0 {
			continue
		}
		return decodeTargets(b, h)
	}
	return nil, fmt.Errorf("dm: the table of %s does not fit 4 MiB", name)
}
