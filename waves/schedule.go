package waves

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
)

// MaxSeed bounds host seeds: a seed is 0..MaxSeed-1. A schedule key equal
// to MaxSeed marks the end of the last wave; larger keys are ignored, as
// Bottlerocket ignores them.
const MaxSeed = 2048

// SingleWaveWindow is the window a schedule of one wave and no end spreads
// its hosts over (there is no earlier window to copy).
const SingleWaveWindow = time.Hour

// MinTime and MaxTime bound every time in a schedule: the years 0000 to
// 9999 that RFC 3339, and so a manifest, can write.
var (
	MinTime = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	MaxTime = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
)

// inRange reports whether t lies within [MinTime, MaxTime].
func inRange(t time.Time) bool { return !t.Before(MinTime) && !t.After(MaxTime) }

// ErrSchedule means a schedule is inconsistent.
var ErrSchedule = errors.New("waves: invalid schedule")

// Wave is one wave of a schedule: from Start on, hosts with seeds from Seed
// up to the next wave's Seed may update.
type Wave struct {
	Seed  uint32
	Start time.Time
}

// Pause is a pause of the rollout, in wall-clock time; To is zero while the
// pause lasts.
type Pause struct {
	From, To time.Time
}

// Schedule is a rollout schedule: waves in seed order, and pauses in time
// order.
type Schedule struct {
	Waves  []Wave
	Pauses []Pause
}

// Validate checks that seeds increase and start times do not decrease, that the first
// wave starts at seed 0 (or there are no waves), that pauses are
// ordered and do not overlap, and that every time lies within [MinTime,
// MaxTime].
func (s Schedule) Validate() error {
	for i, w := range s.Waves {
		if !inRange(w.Start) {
			return fmt.Errorf("%w: the wave at seed %d starts at %s, outside the years 0000 to 9999", ErrSchedule, w.Seed, w.Start.UTC())
		}
		if i == 0 && w.Seed != 0 {
			return fmt.Errorf("%w: the first wave starts at seed %d, not 0: seeds 0-%d belong to no wave", ErrSchedule, w.Seed, w.Seed-1)
		}
		if i > 0 {
			prev := s.Waves[i-1]
			if w.Seed <= prev.Seed {
				return fmt.Errorf("%w: seed %d follows seed %d", ErrSchedule, w.Seed, prev.Seed)
			}
			if w.Start.Before(prev.Start) {
				return fmt.Errorf("%w: waves are unordered: seed %d starts at %s, before seed %d at %s",
					ErrSchedule, w.Seed, w.Start.Format(time.RFC3339), prev.Seed, prev.Start.Format(time.RFC3339))
			}
		}
	}
	for i, p := range s.Pauses {
		if !inRange(p.From) || (!p.To.IsZero() && !inRange(p.To)) {
			return fmt.Errorf("%w: pause %d (%s to %s) lies outside the years 0000 to 9999", ErrSchedule, i+1, p.From.UTC(), p.To.UTC())
		}
		if !p.To.IsZero() && !p.To.After(p.From) {
			return fmt.Errorf("%w: pause %d ends (%s) before it starts (%s)", ErrSchedule, i+1, p.To.Format(time.RFC3339), p.From.Format(time.RFC3339))
		}
		if i > 0 {
			prev := s.Pauses[i-1]
			if prev.To.IsZero() || p.From.Before(prev.To) {
				return fmt.Errorf("%w: pause %d overlaps the pause before it", ErrSchedule, i+1)
			}
		}
	}
	return nil
}

// Paused reports whether the rollout is paused at now.
func (s Schedule) Paused(now time.Time) bool {
	for _, p := range s.Pauses {
		if !p.From.After(now) && (p.To.IsZero() || p.To.After(now)) {
			return true
		}
	}
	return false
}

// span is one wave as hosts see it: its seed range and its window.
type span struct {
	index            int
	firstSeed, limit uint32 // seeds [firstSeed, limit)
	start, end       time.Time
}

// spans returns the effective waves: keys below MaxSeed, each with the
// window up to the next wave (the last: up to the end marker, or as long
// as the window before it).
func (s Schedule) spans() []span {
	var out []span
	var end time.Time
	for _, w := range s.Waves {
		if w.Seed == MaxSeed {
			end = w.Start
		}
		if w.Seed >= MaxSeed {
			continue
		}
		out = append(out, span{index: len(out), firstSeed: w.Seed, start: w.Start})
	}
	for i := range out {
		if i+1 < len(out) {
			out[i].limit, out[i].end = out[i+1].firstSeed, out[i+1].start
			continue
		}
		out[i].limit = MaxSeed
		switch {
		case !end.IsZero():
			out[i].end = end
		case i > 0:
			out[i].end = out[i].start.Add(out[i].start.Sub(out[i-1].start))
		default:
			out[i].end = out[i].start.Add(SingleWaveWindow)
		}
	}
	return out
}

// Host is what a host knows about itself for the rollout: its seed
// (0..MaxSeed-1) and a persistent random ID.
type Host struct {
	Seed uint32
	ID   [16]byte
}

// fraction places a host within its seed's slice of a wave: a number in
// [0, 1) derived from its ID, stable across runs.
func (h Host) fraction() float64 {
	sum := sha256.Sum256(h.ID[:])
	return float64(binary.BigEndian.Uint64(sum[:8])>>11) / (1 << 53)
}

// Decision is whether a host may update now, and why.
type Decision struct {
	Eligible bool
	// EligibleAt is when the host becomes (or became) eligible, in wall
	// time with pauses accounted for; zero while the rollout is paused and
	// the host is still waiting, or when there are no waves.
	EligibleAt time.Time
	// Wave is the host's wave, 0-based; -1 when there are no waves.
	Wave  int
	Waves int
	// FirstSeed and LimitSeed are the wave's seeds: [FirstSeed, LimitSeed).
	FirstSeed, LimitSeed uint32
	Paused               bool
	Reason               string
}

// Eligible decides whether host h may take the update scheduled by s at
// time now. It is pure and monotonic: once eligible, a host stays eligible
// as now advances.
func Eligible(h Host, s Schedule, now time.Time) Decision {
	spans := s.spans()
	if len(spans) == 0 {
		return Decision{Eligible: true, Wave: -1, Reason: "the update has no waves: every host may take it"}
	}
	seed := h.Seed % MaxSeed
	i, _ := slices.BinarySearchFunc(spans, seed, func(sp span, seed uint32) int {
		switch {
		case seed < sp.firstSeed:
			return 1
		case seed >= sp.limit:
			return -1
		}
		return 0
	})
	if i >= len(spans) {
		i = len(spans) - 1
	}
	sp := spans[i]
	pos := (float64(seed-sp.firstSeed) + h.fraction()) / float64(sp.limit-sp.firstSeed)
	at := sp.start.Add(time.Duration(pos * float64(sp.end.Sub(sp.start))))
	d := Decision{Wave: sp.index, Waves: len(spans), FirstSeed: sp.firstSeed, LimitSeed: sp.limit}
	wall, paused := s.wallTime(at)
	d.Paused = s.Paused(now)
	if paused {
		from := s.Pauses[len(s.Pauses)-1].From
		d.Reason = fmt.Sprintf("the rollout is paused since %s; this host (wave %d of %d, seeds %d-%d) waits for it to resume",
			from.UTC().Format(time.RFC3339), sp.index+1, len(spans), sp.firstSeed, sp.limit-1)
		return d
	}
	d.EligibleAt = wall
	d.Eligible = !wall.After(now)
	switch {
	case d.Eligible:
		d.Reason = fmt.Sprintf("eligible since %s (wave %d of %d, seeds %d-%d)", wall.UTC().Format(time.RFC3339), sp.index+1, len(spans), sp.firstSeed, sp.limit-1)
	case now.Before(spans[0].start):
		d.Reason = fmt.Sprintf("waiting: the first wave opens at %s; this host's turn is at %s (wave %d of %d, seeds %d-%d)",
			spans[0].start.UTC().Format(time.RFC3339), wall.UTC().Format(time.RFC3339), sp.index+1, len(spans), sp.firstSeed, sp.limit-1)
	default:
		d.Reason = fmt.Sprintf("waiting for its turn at %s (wave %d of %d, seeds %d-%d)", wall.UTC().Format(time.RFC3339), sp.index+1, len(spans), sp.firstSeed, sp.limit-1)
	}
	return d
}

// wallTime maps a time on the schedule to wall-clock time by adding the
// pauses that began before it. paused is set when an open pause began
// before it (the wall time is not yet known).
func (s Schedule) wallTime(t time.Time) (time.Time, bool) {
	for _, p := range s.Pauses {
		if !p.From.Before(t) {
			break
		}
		if p.To.IsZero() {
			return time.Time{}, true
		}
		t = t.Add(p.To.Sub(p.From))
	}
	return t, false
}

// WaveInfo describes one wave of a schedule for people.
type WaveInfo struct {
	Wave       int       `json:"wave"`
	FirstSeed  uint32    `json:"first_seed"`
	LastSeed   uint32    `json:"last_seed"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	Share      float64   `json:"share_percent"`      // of the fleet
	Cumulative float64   `json:"cumulative_percent"` // of the fleet, this wave included
}

// Describe lists the waves: seed range, window (pauses not included) and
// share of the fleet.
func (s Schedule) Describe() []WaveInfo {
	var out []WaveInfo
	for _, sp := range s.spans() {
		out = append(out, WaveInfo{Wave: sp.index + 1, FirstSeed: sp.firstSeed, LastSeed: sp.limit - 1,
			Start: sp.start, End: sp.end,
			Share:      100 * float64(sp.limit-sp.firstSeed) / MaxSeed,
			Cumulative: 100 * float64(sp.limit) / MaxSeed})
	}
	return out
}
