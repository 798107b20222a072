package waves

import (
	"testing"
	"time"
)

// defaultWavesInline is Bottlerocket's default-waves.toml, inline, so the
// monotonicity and pause tests run without ../shared.
const defaultWavesInline = `
[[waves]]
start_after = '1 hour'
fleet_percentage = 1
[[waves]]
start_after = '4 hours'
fleet_percentage = 5
[[waves]]
start_after = '1 day'
fleet_percentage = 15
[[waves]]
start_after = '2 days'
fleet_percentage = 40
[[waves]]
start_after = '4 days'
fleet_percentage = 60
[[waves]]
start_after = '5 days'
fleet_percentage = 90
[[waves]]
start_after = '6 days'
fleet_percentage = 100
`

func inlineSchedule(t *testing.T, start time.Time) Schedule {
	t.Helper()
	p, err := ParsePolicy([]byte(defaultWavesInline))
	if err != nil {
		t.Fatal(err)
	}
	s, err := p.Schedule(start)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestInlineScheduleKeys(t *testing.T) {
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	s := inlineSchedule(t, start)
	want := []uint32{0, 20, 102, 307, 819, 1228, 1843}
	if len(s.Waves) != len(want) {
		t.Fatalf("%d waves", len(s.Waves))
	}
	for i, w := range s.Waves {
		if w.Seed != want[i] {
			t.Errorf("wave %d starts at seed %d, want %d", i, w.Seed, want[i])
		}
	}
}

// Once eligible, every host stays eligible as time advances, and within a
// wave a higher seed is never due before a lower one.
func TestInlineMonotonic(t *testing.T) {
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	s := inlineSchedule(t, start)
	for _, h := range hostsFor(2000, 7) {
		due := Eligible(h, s, start).EligibleAt
		for _, dt := range []time.Duration{0, time.Hour, 30 * time.Hour, 5 * 24 * time.Hour, 30 * 24 * time.Hour} {
			now := start.Add(dt)
			d := Eligible(h, s, now)
			if d.Eligible != !due.After(now) {
				t.Fatalf("seed %d due %v: eligible=%v at %v", h.Seed, due, d.Eligible, now)
			}
		}
	}
	id := [16]byte{9}
	var prev time.Time
	for seed := uint32(0); seed < MaxSeed; seed++ {
		d := Eligible(Host{Seed: seed, ID: id}, s, start)
		if seed > 0 && d.Wave == Eligible(Host{Seed: seed - 1, ID: id}, s, start).Wave && d.EligibleAt.Before(prev) {
			t.Fatalf("seed %d is due before seed %d in the same wave", seed, seed-1)
		}
		prev = d.EligibleAt
	}
}

// A pause stops the rollout where it stands; a resume shifts the rest by
// the pause's length.
func TestInlinePauseAndResume(t *testing.T) {
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	s := inlineSchedule(t, start)
	pauseAt := start.Add(30 * time.Hour)
	paused, resumed := s, s
	paused.Pauses = []Pause{{From: pauseAt}}
	resumed.Pauses = []Pause{{From: pauseAt, To: pauseAt.Add(10 * time.Hour)}}
	for _, h := range hostsFor(3000, 3) {
		due := Eligible(h, s, start).EligibleAt
		d := Eligible(h, paused, pauseAt.Add(5*time.Hour))
		if due.After(pauseAt) && (d.Eligible || !d.Paused) {
			t.Fatalf("a host due at %v became eligible during the pause", due)
		}
		if !due.After(pauseAt) && !d.Eligible {
			t.Fatalf("a host due at %v lost its eligibility in the pause", due)
		}
		want := due
		if due.After(pauseAt) {
			want = due.Add(10 * time.Hour)
		}
		if got := Eligible(h, resumed, start).EligibleAt; !got.Equal(want) {
			t.Fatalf("after the resume, due %v, want %v", got, want)
		}
	}
}
