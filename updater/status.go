package updater

import (
	"context"
	"fmt"

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
	Seed        uint32                `json:"seed"`
	SeedFrom    string                `json:"seed_from"`
	// RebootNeeded is set when a verified update is switched and waits
	// for a reboot.
	RebootNeeded bool `json:"reboot_needed"`
	// AwaitingMarkGood is set when the running set is the new one and is
	// not yet marked good.
	AwaitingMarkGood bool `json:"awaiting_mark_good"`
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
		LastAttempt: s.st.LastAttempt, Failed: s.st.Failed}
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
		st.Sets[set.String()] = &SetStatus{Priority: a.Priority(), Tries: a.Tries(), Successful: a.Successful(),
			WillBoot: a.WillBoot(), Boot: sp.Boot, Root: sp.Root, Hash: sp.Hash, Holds: s.st.Sets[set.String()]}
	}
	if p := s.st.Pending; p != nil && s.disk.Active != nil {
		st.RebootNeeded = p.Stage == StageApplied && p.Set != st.Active && st.Next == p.Set
		st.AwaitingMarkGood = p.Stage == StageApplied && p.Set == st.Active
	}
	return st, nil
}

// String is a one-line summary of a release for people.
func (r *Running) String() string {
	return fmt.Sprintf("%s %s %s", r.Variant, r.Arch, r.Version)
}
