package updater

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/flock"
)

// session is one command's view of the disk and the state.
type session struct {
	diskLock *flock.Held
	u        *Updater
	disk     *gptprio.Disk
	t        *gptprio.Table
	l        gptprio.Layout
	active   gptprio.Set
	st       *State
	// lastResumes counts download resumptions of the last install.
	lastResumes int
	// discarded says why a checkpoint was not used ("" when none was).
	discarded string
	// resumedAt is the compressed bytes a checkpoint saved (-1: none used).
	resumedAt int64
	// verifiedNow: this session wrote and verified the inactive set (the
	// switch need not check it again).
	verifiedNow bool
}

// note says what happened to the checkpoint, for the last attempt.
func (s *session) note() string {
	switch {
	case s.discarded != "":
		return s.discarded
	case s.resumedAt > 0:
		return fmt.Sprintf("went on from a checkpoint with %d bytes already downloaded", s.resumedAt)
	}
	return ""
}

// openSession opens the disk, reads its table under a shared lock, learns
// the active set and loads and reconciles the state. needActive makes an
// unknown active set an error.
func (u *Updater) openSession(ctx context.Context, readOnly, needActive bool) (*session, error) {
	d, err := gptprio.OpenDisk(ctx, u.o.Disk, gptprio.OpenOptions{ReadOnly: readOnly, SectorSize: u.o.SectorSize,
		Active: u.o.Active, Host: u.o.Host})
	if err != nil {
		return nil, err
	}
	s := &session{u: u, disk: d}
	if err := s.reload(ctx); err != nil {
		d.Close()
		return nil, err
	}
	if !readOnly {
		// The state directory's lock keeps two updogs sharing it apart;
		// two with different state directories (two configurations) could
		// still write the same disk. A lock named after the disk's GUID
		// keeps them apart too.
		if err := s.lockDisk(ctx); err != nil {
			d.Close()
			return nil, err
		}
		// From here a failure releases the disk's lock with the disk: a
		// lock left held (in a process that goes on, a test's) would
		// refuse the next disk that reuses the image file's inode.
	}
	if d.Active == nil {
		if needActive {
			s.close()
			return nil, fmt.Errorf("%w: %s is not the disk of the running system, so --active a|b must say which set runs", ErrActiveUnknown, d.Path)
		}
	} else {
		s.active = *d.Active
	}
	if s.st, err = u.store.load(); err != nil {
		s.close()
		return nil, err
	}
	if d.Active != nil && s.reconcile() {
		if !readOnly {
			if err := u.store.save(s.st); err != nil {
				s.close()
				return nil, err
			}
		}
	}
	return s, nil
}

func (s *session) close() {
	s.diskLock.Release()
	s.disk.Close()
}

// diskIdentity names a disk for its lock: the device number of a block
// device, the device and inode of an image file (GUIDs repeat on cloned
// disks; paths have aliases).
func diskIdentity(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("cannot identify %s", path)
	}
	if fi.Mode()&os.ModeDevice != 0 {
		return fmt.Sprintf("blk-%x", st.Rdev), nil
	}
	return fmt.Sprintf("file-%x-%x", st.Dev, st.Ino), nil
}

// lockDisk takes the disk's updog lock (in Options.RunDir, /run/lock by
// default), failing at once, naming the holder, when another updog has it.
func (s *session) lockDisk(ctx context.Context) error {
	dir := s.u.o.RunDir
	if dir == "" {
		dir = "/run/lock"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("the disk lock's directory: %w", err)
	}
	id, err := diskIdentity(s.disk.Path)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "updog-disk-"+id+".lock")
	h, err := flock.LockFile(ctx, path, s.u.o.LockWait)
	if err != nil {
		var le *flock.LockedError
		if errors.As(err, &le) {
			return &LockedError{Path: path, PID: le.PID, What: "disk " + s.disk.Path}
		}
		return fmt.Errorf("locking %s for updog: %w", s.disk.Path, err)
	}
	s.diskLock = h
	return nil
}

func (s *session) reload(ctx context.Context) error {
	t, l, err := s.disk.Read(ctx)
	if err != nil {
		return err
	}
	s.t, s.l = t, l
	return nil
}

func (s *session) inactive() gptprio.Set { return s.active.Other() }

func (s *session) dual() error {
	switch {
	case len(s.l.Sets) < 2:
		return fmt.Errorf("%w: %s has a single partition set", ErrNoInactiveSet, s.disk.Path)
	case len(s.l.Sets) > 2:
		// Which set is "the other one" has no answer with three sets.
		return fmt.Errorf("%w: %s has %d partition sets (%v); updog updates A/B disks only", gptprio.ErrTooManySets,
			s.disk.Path, len(s.l.Sets), s.l.Names())
	case s.active != gptprio.SetA && s.active != gptprio.SetB:
		return fmt.Errorf("%w: the running set %v is neither A nor B", ErrNoInactiveSet, s.active)
	}
	return nil
}

// reconcile brings the state up to date with the disk: a switched update
// whose set booted and was marked good is complete; one whose set was
// tried and never marked good (the bootloader fell back) is recorded as a
// failure, so that release is skipped from now on. It reports whether the
// state changed.
func (s *session) reconcile() bool {
	p := s.st.Pending
	if p == nil || len(s.l.Sets) < 2 {
		return false
	}
	if p.Stage == StageWritten && s.disk.Active != nil && p.Set == s.inactive().String() {
		// The switch's table write is the commit point: a process killed
		// after it, before it recorded the switch, left the disk booting
		// the new set next. The disk is right; the record catches up.
		a := gptprio.Attrs(s.t, s.l, s.inactive())
		if n, err := gptprio.Next(s.t); err == nil && n == s.inactive() && a.Tries() > 0 && !a.Successful() {
			p.Stage, p.AppliedAt = StageApplied, s.u.now().UTC()
			s.st.Waiting = nil
			return true
		}
	}
	if p.Stage != StageApplied {
		return false
	}
	ps, err := gptprio.ParseSet(p.Set)
	if err != nil || int(ps) >= len(s.l.Sets) {
		s.st.Pending = nil
		return true
	}
	a := gptprio.Attrs(s.t, s.l, ps)
	now := s.u.now().UTC()
	switch {
	case a.Successful():
		// Booted and marked good (by updog or by hand).
		s.st.Pending = nil
		s.st.Rebooting = nil
		s.st.LastAttempt = &Attempt{Action: "boot", Release: &p.Release, Started: p.AppliedAt, Ended: now, Outcome: "success"}
		return true
	case ps == s.active:
		// Running the new set; waiting for mark-good.
		if s.st.Rebooting != nil {
			s.st.Rebooting = nil
			return true
		}
		return false
	case a.Tries() == 0 && a.Priority() == 0:
		// The bits were cleared by hand (signpost clear-inactive) before
		// the set booted: no boot failed; the switch is just undone.
		p.Stage, p.AppliedAt = StageWritten, time.Time{}
		return true
	case a.Tries() == 0:
		reason := fmt.Sprintf("set %s was tried at boot and never marked good; the bootloader fell back to set %s", ps, s.active)
		s.st.recordFailure(p.Release, reason, now)
		s.st.Rebooting = nil
		if l := s.st.Lock; l != nil && l.Held {
			// Keep the slot: a bad release stops the rollout here.
			l.Kept, l.Reason = true, fmt.Sprintf("%s failed: %s", p.Version, reason)
		}
		s.st.Pending = nil
		s.st.LastAttempt = &Attempt{Action: "boot", Release: &p.Release, Started: p.AppliedAt, Ended: now, Outcome: "failed", Error: reason}
		return true
	case a.Priority() == 0:
		// The switch was undone by hand (signpost cancel-upgrade).
		p.Stage = StageWritten
		return true
	}
	return false // switched, waiting for the reboot
}

// edit writes one change of the boot bits, under the disk's lock, and
// keeps the session's copy current.
func (s *session) edit(ctx context.Context, f func(t *gptprio.Table, l gptprio.Layout) (*gptprio.Table, error)) error {
	_, after, err := s.disk.Update(ctx, f)
	if err != nil {
		return err
	}
	l, err := gptprio.FindLayout(after)
	if err != nil {
		return err
	}
	s.t, s.l = after, l
	return nil
}

// errIs reports whether err matches any of targets.
func errIs(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
