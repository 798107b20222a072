package manifest

import (
	"fmt"
	"slices"
	"strings"
)

// Query is what a host asks of a manifest.
type Query struct {
	Variant, Arch string
	Current       Version
	// Lock is the host's version lock: "" or "latest" for the newest
	// release, or an exact version (a "v" prefix is allowed) to move to,
	// up or down.
	Lock string
	// Want, when set, asks for exactly this version (updog update --image),
	// overriding Lock.
	Want *Version
}

// Applicable returns the releases of the query's variant and arch that are
// not pulled back (version <= max_version), newest first.
func (m *Manifest) Applicable(variant, arch string) []*Update {
	var out []*Update
	for _, u := range m.Updates {
		if u.Variant == variant && u.Arch == arch && !u.MaxVersion.Less(u.Version) {
			out = append(out, u)
		}
	}
	slices.SortStableFunc(out, func(a, b *Update) int { return b.Version.Compare(a.Version) })
	return out
}

// Choose picks the update for a host, as Bottlerocket's updog does: among
// the applicable releases, newest first, the first whose version is above
// the current one, or any when the current version is above the release's
// max_version (so lowering max_version pulls a release back and moves hosts
// down to the newest release still offered). A version lock or an explicit
// version selects exactly that release, up or down. It returns
// ErrNoUpdate when the host should stay, ErrVersionNotFound when the
// requested version is not offered. Waves are not considered here.
func (m *Manifest) Choose(q Query) (*Update, error) {
	cands := m.Applicable(q.Variant, q.Arch)
	want := q.Want
	if want == nil {
		if lock := strings.TrimSpace(q.Lock); lock != "" && lock != "latest" {
			v, err := ParseVersionLock(lock)
			if err != nil {
				return nil, fmt.Errorf("version lock %q: %w", q.Lock, err)
			}
			want = &v
		}
	}
	if want != nil {
		for _, u := range cands {
			if u.Version.Compare(*want) == 0 {
				if u.Version.Compare(q.Current) == 0 {
					return nil, fmt.Errorf("%w: already running %s", ErrNoUpdate, q.Current)
				}
				return u, nil
			}
		}
		return nil, fmt.Errorf("%w: %s for %s %s is not offered (or is pulled back by max_version)", ErrVersionNotFound, want, q.Variant, q.Arch)
	}
	for _, u := range cands {
		if q.Current.Less(u.Version) || u.MaxVersion.Less(q.Current) {
			return u, nil
		}
	}
	return nil, fmt.Errorf("%w: %s %s %s is the newest release offered", ErrNoUpdate, q.Variant, q.Arch, q.Current)
}
