package gptprio

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/flock"
)

// This file is the one way a program changes the partition table of a real
// disk or image file: [OpenDisk], then [Disk.Update] (or [Disk.Format] for
// a new table). Every change is a read-modify-write under an exclusive BSD
// flock(2) on the whole-disk device node or the image file, the convention
// of systemd's "Locking Block Device Access" that udev honours (udev does
// not probe a disk while it is locked); readers take a shared lock. The
// table is re-read under the lock, so two writers (two signposts, updog
// and signpost, the boot selector and updog) never interleave their writes
// and never lose each other's change.

// Errors of the disk layer.
var (
	// ErrNoHostDisk means no disk was named and the disk holding the
	// running root filesystem could not be found through /sys.
	ErrNoHostDisk = errors.New("gptprio: no disk given, and the disk holding / could not be found")
	// ErrActiveMismatch means the operator named an active set that is not
	// the one the running system booted from (see [ActiveMismatchError]).
	ErrActiveMismatch = errors.New("gptprio: the active set given is not the running one")
	// ErrRootNotInSet means the running root filesystem is on a partition
	// of the disk that belongs to no BOOT/ROOT/HASH set.
	ErrRootNotInSet = errors.New("gptprio: the running root filesystem is in no partition set")
	// ErrActiveChanged means the set holding the running root changed
	// between OpenDisk and a later read (someone repartitioned the disk).
	ErrActiveChanged = errors.New("gptprio: the partition sets changed while the disk was open")
	// ErrDiskReadOnly is returned by Update and Format on a Disk opened
	// with ReadOnly.
	ErrDiskReadOnly = errors.New("gptprio: disk opened read-only")
)

// ActiveMismatchError says which set the operator named and which one the
// running system is on. It matches ErrActiveMismatch.
type ActiveMismatchError struct {
	Path      string
	Claimed   Set // what the operator said
	Running   Set // what /sys says
	Partition int // the partition under the running root
}

func (e *ActiveMismatchError) Error() string {
	return fmt.Sprintf("%s: the active set was given as %v, but the running system's root filesystem is on partition %d, in set %v; refusing to treat the running set as inactive",
		e.Path, e.Claimed, e.Partition, e.Running)
}

// Is makes an ActiveMismatchError match ErrActiveMismatch.
func (e *ActiveMismatchError) Is(target error) bool { return target == ErrActiveMismatch }

// HostInfo says where the running system is: SysRoot is where sys/ and dev/
// are looked up ("/" on a host, a fake tree in tests), and RootDevice
// returns the device numbers of the root filesystem. The zero value is the
// real host ("/", and the device of "/").
type HostInfo struct {
	SysRoot    string
	RootDevice func() (major, minor uint32, err error)
}

func (h HostInfo) sysRoot() string {
	if h.SysRoot == "" {
		return "/"
	}
	return h.SysRoot
}

// backing finds the partition under the running root filesystem.
func (h HostInfo) backing() (blockdev.Backing, error) {
	rootDev := h.RootDevice
	if rootDev == nil {
		rootDev = func() (uint32, uint32, error) { return blockdev.DeviceOf("/") }
	}
	major, minor, err := rootDev()
	if err != nil {
		return blockdev.Backing{}, err
	}
	return blockdev.ResolveBacking(h.sysRoot(), major, minor)
}

// OpenOptions controls OpenDisk.
type OpenOptions struct {
	// ReadOnly opens the disk without write access: Read and DryRun work,
	// Update and Format fail with ErrDiskReadOnly.
	ReadOnly bool
	// SectorSize is the logical sector size of an image file: 0 finds it
	// from where the GPT headers are (512 when there are none), else 512
	// or 4096. Block devices report their own and ignore it.
	SectorSize int
	// LockWait bounds how long each operation waits for the disk's lock:
	// 0 means flock.DefaultWait, a negative value one try without waiting.
	LockWait time.Duration
	// Active is the operator's claim of the running set: "", "a" or "b".
	// On the disk of the running system it must agree with what /sys says
	// (else ActiveMismatchError); on an image file it is taken as given.
	Active string
	// Host says how to find the running system; the zero value is the
	// real host.
	Host HostInfo
}

// Disk is an open disk (a whole-disk block device or an image file) whose
// partition table is read and changed under flock(2) locks. A Disk
// serializes its own operations; two Disks on the same disk (in one
// process or two) exclude each other as two processes do.
type Disk struct {
	// Path is the disk's path: as given, or the host's disk when none was.
	Path string
	// Active is the running set: from /sys on the running host's disk,
	// else the operator's claim; nil when unknown (an image file without
	// one).
	Active *Set
	// OnHost says the disk holds the running root filesystem, so Active
	// came from /sys.
	OnHost bool

	f        *blockdev.File
	readOnly bool
	wait     time.Duration
	rootPart int // the partition under the running root (OnHost only)
	mu       sync.Mutex
}

// OpenDisk opens the disk at path ("" means the disk holding the running
// root filesystem, found through /sys) and works out the active set:
//
//   - on the disk of the running system (the disk given is the one holding
//     the root partition, through the dm-verity device if there is one),
//     the active set is the set holding the root partition; an operator's
//     o.Active that says otherwise is refused with *ActiveMismatchError;
//   - on any other disk (an image file), there is no running system on
//     it: Active is o.Active, or nil when it was not given.
//
// A FIFO, a directory or a character device at path is refused at once. On
// the host's disk the table is read (under a shared lock) to map the root
// partition to its set; a disk whose table cannot be read then fails to
// open. The Disk must be closed.
func OpenDisk(ctx context.Context, path string, o OpenOptions) (*Disk, error) {
	var claim *Set
	if o.Active != "" {
		s, err := ParseSet(o.Active)
		if err != nil {
			return nil, err
		}
		claim = &s
	}
	if o.SectorSize != 0 && o.SectorSize != 512 && o.SectorSize != 4096 {
		return nil, fmt.Errorf("gptprio: sector size %d is not 512 or 4096", o.SectorSize)
	}
	host, hostErr := o.Host.backing()
	if path == "" {
		if hostErr != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoHostDisk, hostErr)
		}
		path = host.Disk
	}
	d := &Disk{Path: path, readOnly: o.ReadOnly, wait: o.LockWait}
	switch {
	case d.wait == 0:
		d.wait = flock.DefaultWait
	case d.wait < 0:
		d.wait = 0
	}
	d.OnHost = hostErr == nil && blockdev.SameFile(path, host.Disk)
	bo := blockdev.Options{ReadOnly: o.ReadOnly, SectorSize: o.SectorSize}
	f, err := blockdev.Open(path, bo)
	if err != nil {
		return nil, fmt.Errorf("opening disk: %w", err)
	}
	d.f = f
	if !f.IsBlockDevice() && o.SectorSize == 0 {
		if err := d.probeSectorSize(ctx, bo); err != nil {
			d.f.Close()
			return nil, err
		}
	}
	if !d.OnHost {
		d.Active = claim
		return d, nil
	}
	d.rootPart = host.Number
	_, l, err := d.Read(ctx)
	if err != nil {
		d.f.Close()
		return nil, err
	}
	running, err := d.runningSet(l)
	if err != nil {
		d.f.Close()
		return nil, err
	}
	if claim != nil && *claim != running {
		d.f.Close()
		return nil, &ActiveMismatchError{Path: path, Claimed: *claim, Running: running, Partition: d.rootPart}
	}
	d.Active = &running
	return d, nil
}

// runningSet maps the root partition to its set.
func (d *Disk) runningSet(l Layout) (Set, error) {
	s, ok := l.SetOf(d.rootPart)
	if !ok {
		return 0, fmt.Errorf("%w: %s: the root filesystem is on partition %d, which is in no BOOT/ROOT/HASH set",
			ErrRootNotInSet, d.Path, d.rootPart)
	}
	return s, nil
}

// probeSectorSize reopens an image file with the sector size its GPT was
// written with, looking for a header at LBA 1 and then (for a damaged
// primary) in the last sector, for 512- and 4096-byte sectors.
func (d *Disk) probeSectorSize(ctx context.Context, bo blockdev.Options) error {
	ss := 0
	err := d.locked(ctx, flock.Shared, func() error {
		ss = probeSectorSize(d.f, d.f.Size())
		return nil
	})
	if err != nil {
		return err
	}
	if ss == 0 || ss == d.f.SectorSize() {
		return nil
	}
	d.f.Close()
	bo.SectorSize = ss
	f, err := blockdev.Open(d.Path, bo)
	if err != nil {
		return fmt.Errorf("opening disk: %w", err)
	}
	d.f = f
	return nil
}

func probeSectorSize(r blockdev.Device, size int64) int {
	if ss := ProbeSectorSize(r); ss != 0 {
		return ss
	}
	for _, ss := range []int{512, 4096} {
		b := make([]byte, 8)
		if size >= 3*int64(ss) && size%int64(ss) == 0 {
			if _, err := r.ReadAt(b, size-int64(ss)); err == nil && string(b) == gptSignature {
				return ss
			}
		}
	}
	return 0
}

// Device is the disk as a blockdev.Device, for reading or writing the
// partitions of an image file through blockdev.Window. Writes through it
// do not take the table lock; the partition table itself is changed only
// through Update and Format.
func (d *Disk) Device() blockdev.Device { return d.f }

// IsBlockDevice reports whether the disk is a block device node (not an
// image file).
func (d *Disk) IsBlockDevice() bool { return d.f.IsBlockDevice() }

// Close closes the disk (and so drops any lock still held).
func (d *Disk) Close() error { return d.f.Close() }

// locked runs fn holding the disk's lock in mode m, waiting at most the
// Disk's lock wait for it and stopping early when ctx ends. This is the one
// place a Disk takes its lock.
func (d *Disk) locked(ctx context.Context, m flock.Mode, fn func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := flock.Lock(ctx, d.f.OSFile(), m, d.wait); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("gptprio: stopped while waiting for the lock on %s: %w", d.Path, err)
		}
		var le *flock.LockedError
		if errors.As(err, &le) {
			return fmt.Errorf("gptprio: the partition table of %s is in use (by signpost, updog or a partitioning tool?): %w", d.Path, err)
		}
		return fmt.Errorf("gptprio: locking %s: %w", d.Path, err)
	}
	defer flock.Unlock(d.f.OSFile())
	return fn()
}

// Read reads the table and finds its partition sets, under a shared lock
// (so it never sees a write half done). It fails if the table cannot be
// read, if its sets cannot be found (ErrLayout), or, on the running host's
// disk, if the set holding the root has changed since OpenDisk
// (ErrActiveChanged).
func (d *Disk) Read(ctx context.Context) (*Table, Layout, error) {
	var (
		t *Table
		l Layout
	)
	err := d.locked(ctx, flock.Shared, func() error {
		var err error
		t, l, err = d.readLocked()
		return err
	})
	if err != nil {
		return nil, Layout{}, err
	}
	return t, l, nil
}

func (d *Disk) readLocked() (*Table, Layout, error) {
	t, err := Read(d.f)
	if err != nil {
		return nil, Layout{}, fmt.Errorf("%s: %w", d.Path, err)
	}
	l, err := FindLayout(t)
	if err != nil {
		return nil, Layout{}, fmt.Errorf("%s: %w", d.Path, err)
	}
	if d.OnHost && d.Active != nil {
		s, err := d.runningSet(l)
		if err != nil {
			return nil, Layout{}, err
		}
		if s != *d.Active {
			return nil, Layout{}, fmt.Errorf("%w: %s: the root partition %d is now in set %v, not %v",
				ErrActiveChanged, d.Path, d.rootPart, s, *d.Active)
		}
	}
	return t, l, nil
}

// Update changes the partition table: under an exclusive lock it re-reads
// the table (as Read does), calls edit with a copy of it and its layout,
// validates the table edit returns, and writes it with [Write] (crash-safe:
// see there for the commit point and the crash states). edit must be pure
// (no I/O); it returns nil, nil when there is nothing to write. before is
// the table as read, after the table written (before itself when nothing
// was). An edit error is returned wrapped, and nothing is written; so is a
// cancelled ctx, up to the moment the write starts.
func (d *Disk) Update(ctx context.Context, edit func(t *Table, l Layout) (*Table, error)) (before, after *Table, err error) {
	if d.readOnly {
		return nil, nil, fmt.Errorf("%w: %s", ErrDiskReadOnly, d.Path)
	}
	return d.modify(ctx, flock.Exclusive, edit, true)
}

// DryRun is Update without the write, under a shared lock: it returns the
// table as read and the table Update would write.
func (d *Disk) DryRun(ctx context.Context, edit func(t *Table, l Layout) (*Table, error)) (before, after *Table, err error) {
	return d.modify(ctx, flock.Shared, edit, false)
}

func (d *Disk) modify(ctx context.Context, m flock.Mode, edit func(*Table, Layout) (*Table, error), write bool) (before, after *Table, err error) {
	err = d.locked(ctx, m, func() error {
		t, l, err := d.readLocked()
		if err != nil {
			return err
		}
		nt, err := edit(t.Clone(), l)
		if err != nil {
			return fmt.Errorf("%s: %w", d.Path, err)
		}
		if nt == nil {
			before, after = t, t
			return nil
		}
		if err := nt.Validate(d.f.Size()); err != nil {
			return fmt.Errorf("%s: %w", d.Path, err)
		}
		if write {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("gptprio: %s: stopped before writing: %w", d.Path, err)
			}
			if err := Write(d.f, nt); err != nil {
				return fmt.Errorf("%s: %w", d.Path, err)
			}
		}
		before, after = t, nt
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return before, after, nil
}

// Format writes t as the disk's partition table, whatever the disk held
// before (nothing, another table, a damaged one), under the same exclusive
// lock as Update, with [Write]. It is for building a new disk image.
func (d *Disk) Format(ctx context.Context, t *Table) error {
	if d.readOnly {
		return fmt.Errorf("%w: %s", ErrDiskReadOnly, d.Path)
	}
	return d.locked(ctx, flock.Exclusive, func() error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("gptprio: %s: stopped before writing: %w", d.Path, err)
		}
		if err := Write(d.f, t); err != nil {
			return fmt.Errorf("%s: %w", d.Path, err)
		}
		return nil
	})
}
