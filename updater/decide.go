package updater

import (
	"errors"
	"fmt"
	"time"

	"github.com/updog/updog/manifest"
	"github.com/updog/updog/waves"
)

// DecideInput is everything the choice of a release depends on.
type DecideInput struct {
	Manifest *manifest.Manifest
	Running  Running
	// Lock is version_lock ("latest" or a version).
	Lock string
	// Want is --image: exactly this version, waves and earlier failures
	// notwithstanding.
	Want *manifest.Version
	Host waves.Host
	// IgnoreWaves is ignore_waves or --now.
	IgnoreWaves bool
	Failed      []Failure
	Now         time.Time
}

// Choice is the decision: the release, where the host stands in its
// rollout, and what was passed over.
type Choice struct {
	Update *manifest.Update
	Wave   waves.Decision
	// Skipped are newer releases passed over because they failed here.
	Skipped []Failure
}

// Decide picks the release for a host, purely. It returns ErrNoUpdate
// when the host should stay (wrapped with the reason), ErrNotInWave with
// the Choice filled in when a release exists but the host's turn has not
// come, and manifest.ErrVersionNotFound when --image or the version lock
// names a release that is not offered.
//
// The choice is manifest.Choose's (Bottlerocket's rule: the newest release
// above the running one, or a move down when max_version pulls releases
// back; a version lock or --image selects exactly that version), made
// after removing the releases that failed to boot here before, unless
// --image names one. --image also skips the wave check, as Bottlerocket's
// forced versions do.
func Decide(in DecideInput) (Choice, error) {
	var c Choice
	m := in.Manifest
	if in.Want == nil && len(in.Failed) > 0 {
		filtered := &manifest.Manifest{}
		for _, u := range m.Updates {
			if f := failedIn(in.Failed, u); f != nil {
				if in.Running.Version.Less(u.Version) || u.MaxVersion.Less(in.Running.Version) {
					c.Skipped = append(c.Skipped, *f)
				}
				continue
			}
			filtered.Updates = append(filtered.Updates, u)
		}
		m = filtered
	}
	u, err := m.Choose(manifest.Query{Variant: in.Running.Variant, Arch: in.Running.Arch, Current: in.Running.Version,
		Lock: in.Lock, Want: in.Want})
	if err != nil {
		if s, ok := skippedCause(c.Skipped, in.Lock, err); ok {
			return c, fmt.Errorf("%w: %s failed on this host before (%s) and is skipped; name it with --image to try it again",
				ErrNoUpdate, s.Version, s.Reason)
		}
		if errors.Is(err, manifest.ErrNoUpdate) {
			return c, fmt.Errorf("%w: %w", ErrNoUpdate, err)
		}
		return c, err
	}
	c.Update = u
	if in.Want != nil || in.IgnoreWaves {
		c.Wave = waves.Decision{Eligible: true, Wave: -1, Reason: "waves ignored"}
		if in.Want != nil {
			c.Wave.Reason = "a version was asked for by name: waves do not apply"
		}
		return c, nil
	}
	c.Wave = waves.Eligible(in.Host, u.Schedule(), in.Now)
	if !c.Wave.Eligible {
		return c, fmt.Errorf("%w: %s: %s", ErrNotInWave, u.Version, c.Wave.Reason)
	}
	return c, nil
}

// skippedCause finds the skipped release that explains err: any of them
// for "no update", the locked one for "version not found".
func skippedCause(skipped []Failure, lock string, err error) (Failure, bool) {
	if len(skipped) == 0 {
		return Failure{}, false
	}
	if errors.Is(err, manifest.ErrNoUpdate) {
		return skipped[0], true
	}
	if errors.Is(err, manifest.ErrVersionNotFound) {
		if v, perr := manifest.ParseVersionLock(lock); perr == nil {
			for _, s := range skipped {
				if s.Version == v.String() {
					return s, true
				}
			}
		}
	}
	return Failure{}, false
}

func failedIn(failed []Failure, u *manifest.Update) *Failure {
	for i := len(failed) - 1; i >= 0; i-- {
		f := failed[i]
		if f.Variant == u.Variant && f.Arch == u.Arch && f.Version == u.Version.String() {
			return &failed[i]
		}
	}
	return nil
}

// Listed is one applicable release, for check-update --all.
type Listed struct {
	Update *manifest.Update
	Wave   waves.Decision
	Failed *Failure
}

// ListApplicable lists every release of the host's variant and arch that is
// not pulled back, newest first, each with the host's wave decision.
func ListApplicable(in DecideInput) []Listed {
	var out []Listed
	for _, u := range in.Manifest.Applicable(in.Running.Variant, in.Running.Arch) {
		l := Listed{Update: u, Failed: failedIn(in.Failed, u)}
		if in.IgnoreWaves {
			l.Wave = waves.Decision{Eligible: true, Wave: -1, Reason: "waves ignored"}
		} else {
			l.Wave = waves.Eligible(in.Host, u.Schedule(), in.Now)
		}
		out = append(out, l)
	}
	return out
}
