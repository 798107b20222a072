package waves

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrPolicy means a wave policy file is malformed or inconsistent.
var ErrPolicy = errors.New("waves: invalid wave policy")

// PolicyWave is one [[waves]] entry of a policy.
type PolicyWave struct {
	// StartAfter is the text of start_after: an offset from the rollout's
	// start ("1 hour", "4 hours", "1 day", "2 days 6 hours") or an RFC 3339
	// time.
	StartAfter      string
	FleetPercentage int
}

// Policy is a wave policy file.
type Policy struct {
	Waves []PolicyWave
	// LastWaveDuration, when set (top-level last_wave_duration, our
	// addition), is the window the last wave's hosts are spread over.
	LastWaveDuration time.Duration
}

// ParsePolicy reads a wave policy: the TOML of Bottlerocket's policy files,
// `[[waves]]` tables with start_after and fleet_percentage, and our
// optional top-level last_wave_duration. It accepts the subset of TOML such
// files use (comments, basic and literal strings, integers) and names the
// line of anything else.
func ParsePolicy(text []byte) (*Policy, error) {
	p := &Policy{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	line := 0
	var cur *PolicyWave
	seen := map[string]bool{}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: line %d: %s", ErrPolicy, line, fmt.Sprintf(format, a...))
	}
	for sc.Scan() {
		line++
		l := strings.TrimSpace(stripComment(sc.Text()))
		if l == "" {
			continue
		}
		if l == "[[waves]]" {
			p.Waves = append(p.Waves, PolicyWave{FleetPercentage: -1})
			cur = &p.Waves[len(p.Waves)-1]
			seen = map[string]bool{}
			continue
		}
		if strings.HasPrefix(l, "[") {
			return nil, bad("unexpected table %s (want [[waves]])", l)
		}
		key, val, ok := strings.Cut(l, "=")
		if !ok {
			return nil, bad("%q is not key = value", l)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if seen[key] {
			return nil, bad("%s is set twice", key)
		}
		seen[key] = true
		switch {
		case cur == nil && key == "last_wave_duration":
			s, err := tomlString(val)
			if err != nil {
				return nil, bad("last_wave_duration: %v", err)
			}
			if p.LastWaveDuration, err = ParseOffset(s); err != nil || p.LastWaveDuration <= 0 {
				return nil, bad("last_wave_duration %q is not a positive duration", s)
			}
		case cur == nil:
			return nil, bad("%s outside a [[waves]] table", key)
		case key == "start_after":
			s, err := tomlString(val)
			if err != nil {
				return nil, bad("start_after: %v", err)
			}
			cur.StartAfter = s
		case key == "fleet_percentage":
			n, err := strconv.Atoi(strings.ReplaceAll(val, "_", ""))
			if err != nil {
				return nil, bad("fleet_percentage %s is not an integer", val)
			}
			cur.FleetPercentage = n
		default:
			return nil, bad("unknown key %s", key)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return p, p.Validate()
}

func stripComment(s string) string {
	inStr := byte(0)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case inStr != 0 && c == inStr:
			inStr = 0
		case inStr == 0 && (c == '"' || c == '\''):
			inStr = c
		case inStr == 0 && c == '#':
			return s[:i]
		}
	}
	return s
}

func tomlString(v string) (string, error) {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		return v[1 : len(v)-1], nil
	}
	if len(v) >= 2 && v[0] == '"' {
		return strconv.Unquote(v)
	}
	return "", fmt.Errorf("%s is not a string", v)
}

// Validate checks percentages (1 to 100, increasing, ending at 100) and
// start times (each parseable; offsets increasing).
func (p *Policy) Validate() error {
	if len(p.Waves) == 0 {
		return fmt.Errorf("%w: no [[waves]]", ErrPolicy)
	}
	prevPct := 0
	var prevOff time.Duration
	for i, w := range p.Waves {
		n := i + 1
		if w.StartAfter == "" {
			return fmt.Errorf("%w: wave %d has no start_after", ErrPolicy, n)
		}
		if w.FleetPercentage < 0 {
			return fmt.Errorf("%w: wave %d has no fleet_percentage", ErrPolicy, n)
		}
		if w.FleetPercentage < 1 || w.FleetPercentage > 100 {
			return fmt.Errorf("%w: wave %d: fleet_percentage %d is not between 1 and 100", ErrPolicy, n, w.FleetPercentage)
		}
		if w.FleetPercentage <= prevPct {
			return fmt.Errorf("%w: wave %d: fleet_percentage %d does not grow past the previous wave's %d", ErrPolicy, n, w.FleetPercentage, prevPct)
		}
		prevPct = w.FleetPercentage
		if _, err := time.Parse(time.RFC3339, w.StartAfter); err == nil {
			continue // absolute times are checked when the schedule is made
		}
		off, err := ParseOffset(w.StartAfter)
		if err != nil {
			return fmt.Errorf("%w: wave %d: start_after: %v", ErrPolicy, n, err)
		}
		if i > 0 && off <= prevOff {
			return fmt.Errorf("%w: wave %d starts %q after the start, not later than wave %d", ErrPolicy, n, w.StartAfter, i)
		}
		prevOff = off
	}
	if prevPct != 100 {
		return fmt.Errorf("%w: the last wave reaches %d %% of the fleet, not 100", ErrPolicy, prevPct)
	}
	return nil
}

// Schedule turns the policy, started at start, into a schedule exactly as
// Bottlerocket's set_waves does: wave i begins at its start time with the
// first seed of its share, floor(previous percentage × 2048) computed in
// 32-bit floating point as Bottlerocket computes it. For default-waves.toml
// that is seeds 0, 20, 102, 307, 819, 1228, 1843. When the policy sets
// last_wave_duration, a key of 2048 marks the end of the last wave.
func (p *Policy) Schedule(start time.Time) (Schedule, error) {
	if err := p.Validate(); err != nil {
		return Schedule{}, err
	}
	var s Schedule
	seed := uint32(0)
	for _, w := range p.Waves {
		at, err := time.Parse(time.RFC3339, w.StartAfter)
		if err != nil {
			off, _ := ParseOffset(w.StartAfter)
			at = start.Add(off)
		}
		s.Waves = append(s.Waves, Wave{Seed: seed, Start: at.UTC().Truncate(time.Second)})
		seed = uint32(float32(w.FleetPercentage) / float32(100) * float32(MaxSeed))
	}
	if p.LastWaveDuration > 0 {
		last := s.Waves[len(s.Waves)-1].Start
		s.Waves = append(s.Waves, Wave{Seed: MaxSeed, Start: last.Add(p.LastWaveDuration)})
	}
	return s, s.Validate()
}

var units = map[string]time.Duration{
	"s": time.Second, "sec": time.Second, "secs": time.Second, "second": time.Second, "seconds": time.Second,
	"m": time.Minute, "min": time.Minute, "mins": time.Minute, "minute": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hr": time.Hour, "hrs": time.Hour, "hour": time.Hour, "hours": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
	"w": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "weeks": 7 * 24 * time.Hour,
}

// ParseOffset reads a duration written for people: "1 hour", "4 hours",
// "30 minutes", "1 day", "2 days 6 hours", "90m".
func ParseOffset(s string) (time.Duration, error) {
	fields := strings.Fields(strings.ToLower(s))
	// Split "90m" into "90" "m".
	var toks []string
	for _, f := range fields {
		i := strings.IndexFunc(f, func(r rune) bool { return r < '0' || r > '9' })
		if i > 0 {
			toks = append(toks, f[:i], f[i:])
		} else {
			toks = append(toks, f)
		}
	}
	if len(toks) == 0 || len(toks)%2 != 0 {
		return 0, fmt.Errorf("%q is not a duration such as \"4 hours\" or \"1 day\"", s)
	}
	var d time.Duration
	for i := 0; i < len(toks); i += 2 {
		n, err := strconv.ParseInt(toks[i], 10, 32)
		u, ok := units[toks[i+1]]
		if err != nil || !ok || n < 0 {
			return 0, fmt.Errorf("%q is not a duration such as \"4 hours\" or \"1 day\"", s)
		}
		d += time.Duration(n) * u
	}
	return d, nil
}
