package manifest

import (
	"fmt"
	"strings"

	"github.com/updog/updog/waves"
)

// Problems are everything Validate found.
type Problems []error

func (p Problems) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %d problem(s):", ErrInvalid, len(p))
	for _, e := range p {
		b.WriteString("\n  - ")
		b.WriteString(e.Error())
	}
	return b.String()
}

// Is makes Problems match ErrInvalid.
func (p Problems) Is(target error) bool { return target == ErrInvalid }

// Unwrap exposes each problem.
func (p Problems) Unwrap() []error { return p }

// Validate checks the whole manifest and returns every problem at once (a
// Problems, matching ErrInvalid), or nil: each update passes
// [Update.Validate]; no two updates share variant, arch and version;
// migrations go forward.
func (m *Manifest) Validate() error {
	var ps Problems
	seen := map[string]bool{}
	for i, u := range m.Updates {
		where := fmt.Sprintf("update %d (%q %q %s)", i+1, u.Variant, u.Arch, u.Version)
		for _, p := range u.problems() {
			ps = append(ps, fmt.Errorf("%s: %w", where, p))
		}
		key := u.Variant + "\x00" + u.Arch + "\x00" + u.Version.String()
		if seen[key] {
			ps = append(ps, fmt.Errorf("%s: duplicate release: another update has the same variant, arch and version", where))
		}
		seen[key] = true
	}
	for _, mg := range m.Migrations {
		if !mg.From.Less(mg.To) {
			ps = append(ps, fmt.Errorf("migration %s: from is not below to", mg.key))
		}
	}
	if len(ps) == 0 {
		return nil
	}
	return ps
}

// Validate checks one release and returns every problem (a Problems,
// matching ErrInvalid), or nil: variant and arch are safe identifiers
// ([CheckVariant], [CheckArch]); the three image names are plain file
// names ([CheckTargetName]); image sizes, when given, are positive and at
// most MaxImageSize; the verity parameters, when given, are what dm-verity
// accepts ([Verity.Validate]); the delta targets, when given, are two
// more plain file names; wave seeds start at 0, seeds and times
// increase, every time lies in the years 0000 to 9999, and pauses are
// ordered.
func (u *Update) Validate() error {
	if ps := u.problems(); len(ps) > 0 {
		return ps
	}
	return nil
}

func (u *Update) problems() Problems {
	var ps Problems
	if err := CheckVariant(u.Variant); err != nil {
		ps = append(ps, err)
	}
	if err := CheckArch(u.Arch); err != nil {
		ps = append(ps, err)
	}
	for _, im := range []struct{ name, v string }{{"boot", u.Images.Boot}, {"root", u.Images.Root}, {"hash", u.Images.Hash}} {
		if strings.TrimSpace(im.v) == "" {
			ps = append(ps, fmt.Errorf("no %s image name", im.name))
		} else if err := CheckTargetName(im.v); err != nil {
			ps = append(ps, fmt.Errorf("images.%s: %w", im.name, err))
		}
	}
	if sz := u.Images.Sizes; sz != nil {
		for _, im := range []struct {
			name string
			v    int64
		}{{"boot", sz.Boot}, {"root", sz.Root}, {"hash", sz.Hash}} {
			if im.v <= 0 || im.v > MaxImageSize {
				ps = append(ps, fmt.Errorf("%w: images.sizes.%s %d is not between 1 and %d bytes (%d TiB)", ErrSize, im.name, im.v, int64(MaxImageSize), int64(MaxImageSize)>>40))
			}
		}
	}
	if v := u.Images.Verity; v != nil {
		var rootSize int64
		if u.Images.Sizes != nil {
			rootSize = u.Images.Sizes.Root
		}
		if err := v.validate(rootSize); err != nil {
			ps = append(ps, err)
		}
	}
	if d := u.Images.Delta; d != nil {
		for _, im := range []struct{ name, v string }{{"seekable", d.Seekable}, {"index", d.Index}} {
			if err := CheckTargetName(im.v); err != nil {
				ps = append(ps, fmt.Errorf("images.delta.%s: %w", im.name, err))
			}
		}
		names := map[string]bool{u.Images.Boot: true, u.Images.Root: true, u.Images.Hash: true}
		if d.Seekable != "" && (d.Seekable == d.Index || names[d.Seekable] || names[d.Index]) {
			ps = append(ps, fmt.Errorf("images.delta: the seekable image and the index must be two targets of their own, not %q and %q", d.Seekable, d.Index))
		}
	}
	if err := u.Schedule().Validate(); err != nil {
		ps = append(ps, err)
	}
	return ps
}

// Warnings are legal but noteworthy states: releases pulled back by a
// max_version below them (no host takes them), waves that start together
// (a window of no length), and wave seeds above 2048 (Bottlerocket ignores
// them, and so do we).
func (m *Manifest) Warnings() []string {
	var w []string
	for _, u := range m.Updates {
		if u.MaxVersion.Less(u.Version) {
			w = append(w, fmt.Sprintf("%s is above its max_version %s: it is pulled back and no host will take it", u, u.MaxVersion))
		}
		for i, wv := range u.Waves {
			if i > 0 && wv.Seed <= waves.MaxSeed && wv.Start.Equal(u.Waves[i-1].Start.Time) {
				w = append(w, fmt.Sprintf("%s: the waves at seeds %d and %d start at the same time: the first of them opens to all its hosts at once", u, u.Waves[i-1].Seed, wv.Seed))
			}
			if wv.Seed > waves.MaxSeed {
				w = append(w, fmt.Sprintf("%s: wave seed %d is above %d and is ignored", u, wv.Seed, waves.MaxSeed))
			}
		}
	}
	return w
}

// FindMigrations lists the migrations to run from one version to another,
// as Bottlerocket does: going forward, from each version take the
// transition that reaches furthest without passing the target; going back,
// the same list reversed.
func (m *Manifest) FindMigrations(from, to Version) ([]string, error) {
	if from.Compare(to) == 0 {
		return nil, nil
	}
	lo, hi, back := from, to, false
	if to.Less(from) {
		lo, hi, back = to, from, true
	}
	var out []string
	for v := lo; v.Compare(hi) != 0; {
		var best *Migration
		for i := range m.Migrations {
			mg := &m.Migrations[i]
			if mg.From.Compare(v) == 0 && !hi.Less(mg.To) && (best == nil || best.To.Less(mg.To)) {
				best = mg
			}
		}
		if best == nil {
			return nil, fmt.Errorf("manifest: no migration path from %s toward %s", v, hi)
		}
		out = append(out, best.Names...)
		v = best.To
	}
	if back {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out, nil
}
