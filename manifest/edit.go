package manifest

import (
	"fmt"
	"slices"
	"time"

	"github.com/updog/updog/waves"
)

// New returns an empty manifest.
func New() *Manifest { return &Manifest{Updates: []*Update{}} }

// Find returns the release with exactly this variant, arch and version.
func (m *Manifest) Find(variant, arch string, v Version) (*Update, error) {
	for _, u := range m.Updates {
		if u.Variant == variant && u.Arch == arch && u.Version.Compare(v) == 0 {
			return u, nil
		}
	}
	return nil, fmt.Errorf("%w: %s %s %s", ErrNotFound, variant, arch, v)
}

// AddUpdate adds a release. A nil maxVersion defaults, as Bottlerocket's
// does, to the greater of the release's version and the current
// max_version of its variant and arch; the max_version then applies to
// every release of that variant and arch. A max_version below the new
// version is refused: nobody could take the release.
func (m *Manifest) AddUpdate(u *Update, maxVersion *Version) error {
	if _, err := m.Find(u.Variant, u.Arch, u.Version); err == nil {
		return fmt.Errorf("%w: %s", ErrDuplicate, u)
	}
	mv := u.Version
	if maxVersion != nil {
		if maxVersion.Less(u.Version) {
			return fmt.Errorf("manifest: max_version %s is below the release's version %s: no host could take it", maxVersion, u.Version)
		}
		mv = *maxVersion
	} else {
		for _, o := range m.Updates {
			if o.Variant == u.Variant && o.Arch == u.Arch && mv.Less(o.MaxVersion) {
				mv = o.MaxVersion
			}
		}
	}
	u.MaxVersion = mv
	if u.Waves == nil {
		u.Waves = Waves{}
	}
	m.Updates = append(m.Updates, u)
	m.SetMaxVersion(mv, u.Variant, u.Arch)
	return nil
}

// RemoveUpdate removes a release.
func (m *Manifest) RemoveUpdate(variant, arch string, v Version) error {
	for i, u := range m.Updates {
		if u.Variant == variant && u.Arch == arch && u.Version.Compare(v) == 0 {
			m.Updates = slices.Delete(m.Updates, i, i+1)
			return nil
		}
	}
	return fmt.Errorf("%w: %s %s %s", ErrNotFound, variant, arch, v)
}

// SetMaxVersion sets max_version on every release of a variant and arch
// ("" matches any). Lowering it below a release pulls that release back.
// It returns how many releases changed.
func (m *Manifest) SetMaxVersion(v Version, variant, arch string) int {
	n := 0
	for _, u := range m.Updates {
		if (variant == "" || u.Variant == variant) && (arch == "" || u.Arch == arch) {
			u.MaxVersion = v
			n++
		}
	}
	return n
}

// SetWaves replaces a release's waves with the policy started at start.
func (u *Update) SetWaves(p *waves.Policy, start time.Time) error {
	s, err := p.Schedule(start)
	if err != nil {
		return err
	}
	u.SetSchedule(s)
	return nil
}

// Pause pauses the release's rollout at t. Pausing a paused rollout is an
// error.
func (u *Update) Pause(t time.Time) error {
	t = t.UTC().Truncate(time.Second)
	if n := len(u.Pauses); n > 0 {
		last := u.Pauses[n-1]
		if last.To.IsZero() {
			return fmt.Errorf("manifest: the rollout of %s is already paused since %s", u, last.From.Format(time.RFC3339))
		}
		if t.Before(last.To) {
			return fmt.Errorf("manifest: a pause at %s would overlap the last pause, which ended at %s", t.Format(time.RFC3339), last.To.Format(time.RFC3339))
		}
	}
	u.Pauses = append(u.Pauses, waves.Pause{From: t})
	return nil
}

// Resume ends the current pause at t; the rest of the schedule shifts by
// the pause's length.
func (u *Update) Resume(t time.Time) error {
	t = t.UTC().Truncate(time.Second)
	n := len(u.Pauses)
	if n == 0 || !u.Pauses[n-1].To.IsZero() {
		return fmt.Errorf("manifest: the rollout of %s is not paused", u)
	}
	if !t.After(u.Pauses[n-1].From) {
		return fmt.Errorf("manifest: resume time %s is not after the pause began (%s)", t.Format(time.RFC3339), u.Pauses[n-1].From.Format(time.RFC3339))
	}
	u.Pauses[n-1].To = t
	return nil
}
