package updater

import (
	"context"
	"fmt"
	"time"

	"github.com/updog/updog/gptprio"
)

// SetStatus is one partition set as status shows it.
type SetStatus struct {
	Priority   int        `json:"priority"`
	Tries      int        `json:"tries"`
	Successful bool       `json:"successful"`
	WillBoot   bool       `json:"will_boot"`
	Boot       int        `json:"boot_partition"`
	Root       int        `json:"root_partition"`
	Hash       int        `json:"hash_partition"`
	Holds      *SetRecord `json:"holds,omitempty"`
}

// Status is updog status.
type Status struct {
	Disk        string                `json:"disk"`
	Running     *Running              `json:"running,omitempty"`
	RunningErr  string                `json:"running_error,omitempty"`
	Active      string                `json:"active,omitempty"`
	Next        string                `json:"next,omitempty"`
	Sets        map[string]*SetStatus `json:"sets"`
	Pending     *Pending              `json:"pending,omitempty"`
	LastAttempt *Attempt              `json:"last_attempt,omitempty"`
	Failed      []Failure             `json:"failed"`
	// OfflineGrace is the last time expired metadata was accepted under
	// --offline-grace.
	OfflineGrace *GraceUse `json:"offline_grace,omitempty"`
	Seed         uint32    `json:"seed"`
	SeedFrom     string    `json:"seed_from"`
	// Reboot is the reboot strategy's view: windows, the fleet lock, and
	// what the switch waits for.
	Reboot RebootStatus `json:"reboot"`
	// State is one word for an agent: idle, installing, staged,
	// waiting_window, waiting_lock, switched, rebooting,
	// awaiting_mark_good, failed.
	State string `json:"state"`
	// Install is an install in progress (or interrupted), as its last
	// checkpoint has it.
	Install *InstallProgress `json:"install,omitempty"`
	// RebootNeeded is set when a verified update is switched and waits
	// for a reboot.
	RebootNeeded bool `json:"reboot_needed"`
	// AwaitingMarkGood is set when the running set is the new one and is
	// not yet marked good.
	AwaitingMarkGood bool `json:"awaiting_mark_good"`
}

// RebootStatus is the reboot strategy's part of status.
type RebootStatus struct {
	Strategy   string     `json:"strategy"`
	Windows    []string   `json:"windows,omitempty"`
	InWindow   bool       `json:"in_window"`
	NextWindow time.Time  `json:"next_window,omitzero"`
	Lock       *LockState `json:"fleet_lock,omitempty"`
	Waiting    *Waiting   `json:"waiting,omitempty"`
	Rebooting  *time.Time `json:"rebooting,omitempty"`
}

// InstallProgress is an install between its first write and its end.
type InstallProgress struct {
	Release    Release `json:"release"`
	Set        string  `json:"set"`
	BytesDone  int64   `json:"bytes_done"`
	BytesTotal int64   `json:"bytes_total"`
	// Rate is bytes per second since the install started (interruptions
	// included).
	Rate    float64 `json:"bytes_per_second"`
	Resumes int     `json:"resumes"`
	// RestartsFromZero lists images whose format has no restart points
	// (xz, lz4, gzip): after a process restart they download again from
	// their start.
	RestartsFromZero []string `json:"restarts_from_zero,omitempty"`
}

// Status reads the disk and the state; it changes nothing (what reconcile
// learns is shown, and saved by the next command that holds the lock).
func (u *Updater) Status(ctx context.Context) (*Status, error) {
	s, err := u.openSession(ctx, true, false)
	if err != nil {
		return nil, err
	}
	defer s.close()
	st := &Status{Disk: s.disk.Path, Sets: map[string]*SetStatus{}, Pending: s.st.Pending,
		LastAttempt: s.st.LastAttempt, Failed: s.st.Failed, OfflineGrace: s.st.Grace}
	if st.Failed == nil {
		st.Failed = []Failure{}
	}
	if r, err := u.running(); err == nil {
		st.Running = &r
	} else {
		st.RunningErr = err.Error()
	}
	h, from := u.host(s.st)
	st.Seed, st.SeedFrom = h.Seed, from
	if s.disk.Active != nil {
		st.Active = s.active.String()
	}
	if n, err := gptprio.Next(s.t); err == nil {
		st.Next = n.String()
	}
	for i, sp := range s.l.Sets {
		set := gptprio.Set(i)
		a := gptprio.Attrs(s.t, s.l, set)
		holds := s.st.Sets[set.String()]
		if holds == nil && st.Running != nil && s.disk.Active != nil && set == s.active {
			// Not written by updog (the image it came with): it runs the
			// release os-release names.
			r := st.Running
			holds = &SetRecord{Release: Release{Variant: r.Variant, Arch: r.Arch, Version: r.Version.String()}, Source: "os-release"}
		}
		st.Sets[set.String()] = &SetStatus{Priority: a.Priority(), Tries: a.Tries(), Successful: a.Successful(),
			WillBoot: a.WillBoot(), Boot: sp.Boot, Root: sp.Root, Hash: sp.Hash, Holds: holds}
	}
	if cp, err := u.store.loadCheckpoint(); err == nil {
		ip := &InstallProgress{Release: cp.Release, Set: cp.Set, BytesDone: cp.bytesDone(), BytesTotal: cp.bytesTotal(), Resumes: cp.Resumes}
		if p := s.st.Pending; p != nil && p.Stage == StageWriting {
			if d := u.now().Sub(p.StartedAt).Seconds(); d > 0 {
				ip.Rate = float64(ip.BytesDone) / d
			}
		}
		for kind, im := range cp.Images {
			if !im.Done && im.Codec != "" && (im.NoRestarts || im.Codec == CodecGzip) {
				ip.RestartsFromZero = append(ip.RestartsFromZero, kind)
			}
		}
		st.Install = ip
	}
	if p := s.st.Pending; p != nil && s.disk.Active != nil {
		st.RebootNeeded = p.Stage == StageApplied && p.Set != st.Active && st.Next == p.Set
		st.AwaitingMarkGood = p.Stage == StageApplied && p.Set == st.Active
	}
	rc := &u.cfg.Reboot
	now := u.now()
	st.Reboot = RebootStatus{Strategy: rc.Strategy, Lock: s.st.Lock, Waiting: s.st.Waiting, Rebooting: s.st.Rebooting, InWindow: true}
	if ws := rc.WindowSet(); len(ws) > 0 {
		for _, w := range ws {
			st.Reboot.Windows = append(st.Reboot.Windows, w.String())
		}
		st.Reboot.InWindow = ws.Contains(now)
		st.Reboot.NextWindow, _ = ws.Next(now)
	}
	st.State = stateWord(st, s.st)
	return st, nil
}

// String is a one-line summary of a release for people.
func (r *Running) String() string {
	return fmt.Sprintf("%s %s %s", r.Variant, r.Arch, r.Version)
}

// stateWord sums status up for an agent.
func stateWord(st *Status, s *State) string {
	p := s.Pending
	switch {
	case st.Install != nil || (p != nil && p.Stage == StageWriting):
		return "installing"
	case s.Rebooting != nil && p != nil && p.Stage == StageApplied && p.Set != st.Active:
		return "rebooting"
	case st.AwaitingMarkGood:
		return "awaiting_mark_good"
	case st.RebootNeeded:
		return "switched"
	case p != nil && p.Stage == StageWritten && s.Waiting != nil && s.Waiting.Reason == WaitWindow:
		return "waiting_window"
	case p != nil && p.Stage == StageWritten && s.Waiting != nil && s.Waiting.Reason == WaitLock:
		return "waiting_lock"
	case p != nil && p.Stage == StageWritten:
		return "staged"
	case s.Lock != nil && s.Lock.Kept:
		return "failed"
	case s.LastAttempt != nil && s.LastAttempt.Outcome == "failed":
		return "failed"
	}
	return "idle"
}
