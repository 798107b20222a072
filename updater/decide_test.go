package updater

import (
	"errors"
	"testing"
	"time"

	"github.com/updog/updog/manifest"
	"github.com/updog/updog/waves"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	v := manifest.MustParseVersion
	mk := func(version, max string, waveStart *time.Time) *manifest.Update {
		u := &manifest.Update{Variant: "v", Arch: "x86_64", Version: v(version), MaxVersion: v(max),
			Images: manifest.Images{Boot: "b" + version, Root: "r" + version, Hash: "h" + version}}
		if waveStart != nil {
			u.Waves = manifest.Waves{{Seed: 0, Start: manifest.WaveTime{Time: *waveStart}}}
		}
		return u
	}
	tomorrow, lastWeek := now.Add(24*time.Hour), now.Add(-7*24*time.Hour)
	m := &manifest.Manifest{Updates: []*manifest.Update{
		mk("1.1.0", "1.3.0", &lastWeek), mk("1.2.0", "1.3.0", &lastWeek), mk("1.3.0", "1.3.0", &tomorrow)}}
	running := Running{Variant: "v", Arch: "x86_64", Version: v("1.0.0")}
	failed12 := []Failure{{Release: Release{"v", "x86_64", "1.2.0"}, Reason: "fell back"}}
	want12 := v("1.2.0")
	host := waves.Host{Seed: 5}
	for _, c := range []struct {
		name     string
		in       DecideInput
		version  string
		err      error
		skipped  int
		eligible bool
	}{
		{"newest is in a wave tomorrow", DecideInput{}, "1.3.0", ErrNotInWave, 0, false},
		{"--now takes it", DecideInput{IgnoreWaves: true}, "1.3.0", nil, 0, true},
		{"version lock below the newest", DecideInput{Lock: "1.2.0"}, "1.2.0", nil, 0, true},
		{"a failed release is skipped", DecideInput{Lock: "latest", IgnoreWaves: true, Failed: failed12, Running: Running{Variant: "v", Arch: "x86_64", Version: v("1.1.0")}}, "1.3.0", nil, 1, true},
		{"the lock names a failed release", DecideInput{Lock: "1.2.0", Failed: failed12}, "", ErrNoUpdate, 1, false},
		{"--image names it again", DecideInput{Want: &want12, Failed: failed12}, "1.2.0", nil, 0, true},
		{"--image bypasses waves", DecideInput{Want: func() *manifest.Version { x := v("1.3.0"); return &x }()}, "1.3.0", nil, 0, true},
		{"up to date", DecideInput{Running: Running{Variant: "v", Arch: "x86_64", Version: v("1.3.0")}}, "", ErrNoUpdate, 0, false},
		{"not offered", DecideInput{Want: func() *manifest.Version { x := v("9.9.9"); return &x }()}, "", manifest.ErrVersionNotFound, 0, false},
	} {
		in := c.in
		in.Manifest, in.Host, in.Now = m, host, now
		if in.Running.Variant == "" {
			in.Running = running
		}
		ch, err := Decide(in)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: err %v, want %v", c.name, err, c.err)
			}
		} else if err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		if c.version != "" && (ch.Update == nil || ch.Update.Version.String() != c.version) {
			t.Errorf("%s: chose %v, want %s", c.name, ch.Update, c.version)
		}
		if len(ch.Skipped) != c.skipped {
			t.Errorf("%s: skipped %v", c.name, ch.Skipped)
		}
		if ch.Update != nil && ch.Wave.Eligible != c.eligible {
			t.Errorf("%s: eligible %v", c.name, ch.Wave.Eligible)
		}
	}
}
