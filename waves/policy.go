package waves

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// ErrPolicy means a wave policy file is malformed or inconsistent.
var ErrPolicy = errors.New("waves: invalid wave policy")

// ErrOffset means an offset is not a duration ParseOffset reads, or is too
// long for a time.Duration (about 292 years).
var ErrOffset = errors.New("waves: invalid offset")

// ErrOffsetTooLong means an offset is a duration, longer than a
// time.Duration holds (it also matches ErrOffset).
var ErrOffsetTooLong = fmt.Errorf("%w: too long", ErrOffset)

// PolicyError is one problem with a policy, matching ErrPolicy. It names
// the wave and the key when the problem is theirs.
type PolicyError struct {
	// Line is the line of a TOML syntax error (0 when unknown).
	Line int
	// Wave is the 1-based [[waves]] entry (0: a top-level key, or the
	// policy as a whole).
	Wave int
	// Key is the key at fault ("" when the problem is not one key's).
	Key string
	// Msg says what is wrong.
	Msg string
	// Err is the underlying error, if any (a *toml.ParseError, ErrOffset).
	Err error
}

func (e *PolicyError) Error() string {
	var b strings.Builder
	b.WriteString(ErrPolicy.Error())
	if e.Line > 0 {
		fmt.Fprintf(&b, ": line %d", e.Line)
	}
	if e.Wave > 0 {
		fmt.Fprintf(&b, ": wave %d", e.Wave)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": %s", e.Key)
	}
	if e.Msg != "" {
		fmt.Fprintf(&b, ": %s", e.Msg)
	}
	return b.String()
}

// Is makes a PolicyError match ErrPolicy.
func (e *PolicyError) Is(target error) bool { return target == ErrPolicy }

// Unwrap returns the underlying error.
func (e *PolicyError) Unwrap() error { return e.Err }

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

// tomlPolicy is the policy as TOML decodes it. Values are decoded into any
// so that a wrong type is reported here, naming the wave and the key,
// rather than by the TOML decoder.
type tomlPolicy struct {
	Waves            []tomlWave `toml:"waves"`
	LastWaveDuration any        `toml:"last_wave_duration"`
}

type tomlWave struct {
	StartAfter      any `toml:"start_after"`
	FleetPercentage any `toml:"fleet_percentage"`
}

// ParsePolicy reads a wave policy: the TOML of Bottlerocket's policy files,
// `[[waves]]` tables with start_after (a string) and fleet_percentage (an
// integer), and our optional top-level last_wave_duration (a string). It
// is full TOML; unknown keys, keys set twice and values of the wrong type
// are errors (a *PolicyError naming the wave and the key), and so is
// anything Validate refuses.
func ParsePolicy(text []byte) (*Policy, error) {
	var raw tomlPolicy
	md, err := toml.Decode(string(text), &raw)
	if err != nil {
		return nil, tomlError(text, md, err)
	}
	if err := unknownKey(md); err != nil {
		return nil, err
	}
	p := &Policy{}
	if raw.LastWaveDuration != nil {
		s, err := tomlString(raw.LastWaveDuration, 0, "last_wave_duration", `"2 days"`)
		if err != nil {
			return nil, err
		}
		d, err := ParseOffset(s)
		if err != nil {
			return nil, &PolicyError{Key: "last_wave_duration", Msg: offsetMsg(err), Err: err}
		}
		if d <= 0 {
			return nil, &PolicyError{Key: "last_wave_duration", Msg: fmt.Sprintf("%q is not a positive duration", s)}
		}
		p.LastWaveDuration = d
	}
	for i, w := range raw.Waves {
		n := i + 1
		pw := PolicyWave{FleetPercentage: -1}
		if w.StartAfter != nil {
			if pw.StartAfter, err = tomlString(w.StartAfter, n, "start_after", `'1 hour'`); err != nil {
				return nil, err
			}
		}
		switch v := w.FleetPercentage.(type) {
		case nil:
		case int64:
			if v < 1 || v > 100 {
				return nil, &PolicyError{Wave: n, Key: "fleet_percentage", Msg: fmt.Sprintf("%d is not between 1 and 100", v)}
			}
			pw.FleetPercentage = int(v)
		default:
			return nil, &PolicyError{Wave: n, Key: "fleet_percentage", Msg: fmt.Sprintf("is %s, want an integer from 1 to 100", tomlType(v))}
		}
		p.Waves = append(p.Waves, pw)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// tomlString checks that a decoded value is a string.
func tomlString(v any, wave int, key, example string) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", &PolicyError{Wave: wave, Key: key, Msg: fmt.Sprintf("is %s, want a string such as %s", tomlType(v), example)}
	}
	return s, nil
}

// tomlType names the TOML type of a decoded value.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a TOML date-time (quote it to make it a string)"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("a %T", v)
}

// wavesHeader matches a [[waves]] line, to count which wave a syntax error
// falls in.
var wavesHeader = regexp.MustCompile(`^\s*\[\[\s*("waves"|'waves'|waves)\s*\]\]`)

// keyLine matches a line that sets a key, for naming the key of a syntax
// error on it.
var keyLine = regexp.MustCompile(`^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=`)

// tomlError turns an error from the TOML decoder into a *PolicyError with
// the line, and the wave and key when known.
func tomlError(text []byte, md toml.MetaData, err error) error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		// The syntax is fine but a value does not fit the policy's shape.
		// Every value but "waves" decodes into any, so it is "waves".
		typ := map[string]string{"Integer": "an integer", "Float": "a float", "Datetime": "a date-time", "String": "a string",
			"Bool": "a boolean", "Array": "an array of values that are not tables", "Hash": "a table ([waves], not [[waves]])"}[md.Type("waves")]
		if typ == "" {
			return &PolicyError{Msg: err.Error(), Err: err}
		}
		return &PolicyError{Key: "waves", Msg: fmt.Sprintf("is %s, want [[waves]] tables", typ), Err: err}
	}
	e := &PolicyError{Line: pe.Position.Line, Key: pe.LastKey, Msg: strings.TrimSuffix(pe.Message, "."), Err: err}
	lines := strings.Split(string(text), "\n")
	if e.Line > 0 && e.Line <= len(lines) {
		// Count the [[waves]] headers up to the line, and take the key from
		// the line itself: the decoder's last key can be an earlier one.
		wave := 0
		for _, l := range lines[:e.Line] {
			if wavesHeader.MatchString(l) {
				wave++
			}
		}
		if m := keyLine.FindStringSubmatch(lines[e.Line-1]); m != nil {
			e.Key = strings.Trim(m[1], `"'`)
			if wave == 0 || strings.HasPrefix(e.Key, "waves.") {
				e.Key = strings.TrimPrefix(e.Key, "waves.")
			}
			e.Wave = wave
		} else if rest, ok := strings.CutPrefix(e.Key, "waves."); ok {
			e.Key, e.Wave = rest, wave
		}
	}
	if strings.Contains(e.Msg, "has already been defined") {
		e.Msg = "is set twice"
	}
	return e
}

// unknownKey reports the first key, in document order, that the policy
// does not have, naming the wave it is in.
func unknownKey(md toml.MetaData) error {
	undecoded := map[string]bool{}
	for _, k := range md.Undecoded() {
		undecoded[k.String()] = true
	}
	if len(undecoded) == 0 {
		return nil
	}
	wave := 0
	for _, k := range md.Keys() {
		if len(k) == 1 && k[0] == "waves" {
			wave++
			continue
		}
		if !undecoded[k.String()] {
			continue
		}
		if len(k) > 1 && k[0] == "waves" {
			return &PolicyError{Wave: wave, Key: k[1:].String(), Msg: "unknown key (a wave has start_after and fleet_percentage)"}
		}
		return &PolicyError{Key: k.String(), Msg: "unknown key (a policy has [[waves]] tables and last_wave_duration)"}
	}
	// Undecoded keys are among Keys; this is only reached if they are not.
	return &PolicyError{Msg: fmt.Sprintf("unknown keys %v", md.Undecoded())}
}

// Validate checks percentages (1 to 100, increasing, ending at 100) and
// start times (each an RFC 3339 time or an offset ParseOffset reads;
// offsets increasing). Errors are *PolicyError.
func (p *Policy) Validate() error {
	if len(p.Waves) == 0 {
		return &PolicyError{Msg: "no [[waves]]"}
	}
	if p.LastWaveDuration < 0 {
		return &PolicyError{Key: "last_wave_duration", Msg: fmt.Sprintf("%v is negative", p.LastWaveDuration)}
	}
	prevPct := 0
	var prevOff time.Duration
	for i, w := range p.Waves {
		n := i + 1
		if w.StartAfter == "" {
			return &PolicyError{Wave: n, Key: "start_after", Msg: "is missing"}
		}
		if w.FleetPercentage < 0 {
			return &PolicyError{Wave: n, Key: "fleet_percentage", Msg: "is missing"}
		}
		if w.FleetPercentage < 1 || w.FleetPercentage > 100 {
			return &PolicyError{Wave: n, Key: "fleet_percentage", Msg: fmt.Sprintf("%d is not between 1 and 100", w.FleetPercentage)}
		}
		if w.FleetPercentage <= prevPct {
			return &PolicyError{Wave: n, Key: "fleet_percentage", Msg: fmt.Sprintf("%d does not grow past the previous wave's %d", w.FleetPercentage, prevPct)}
		}
		prevPct = w.FleetPercentage
		if _, err := time.Parse(time.RFC3339, w.StartAfter); err == nil {
			continue // absolute times are checked when the schedule is made
		}
		off, err := ParseOffset(w.StartAfter)
		if err != nil {
			return &PolicyError{Wave: n, Key: "start_after", Msg: offsetMsg(err), Err: err}
		}
		if i > 0 && off <= prevOff {
			return &PolicyError{Wave: n, Key: "start_after", Msg: fmt.Sprintf("%q after the start is not later than wave %d", w.StartAfter, i)}
		}
		prevOff = off
	}
	if prevPct != 100 {
		return &PolicyError{Msg: fmt.Sprintf("the last wave reaches %d %% of the fleet, not 100", prevPct)}
	}
	return nil
}

// Schedule turns the policy, started at start, into a schedule exactly as
// Bottlerocket's set_waves does: wave i begins at its start time with the
// first seed of its share, floor(previous percentage × 2048) computed in
// 32-bit floating point as Bottlerocket computes it. For default-waves.toml
// that is seeds 0, 20, 102, 307, 819, 1228, 1843. When the policy sets
// last_wave_duration, a key of 2048 marks the end of the last wave.
//
// Every time of the schedule lies between start and MaxTime: a start
// outside [MinTime, MaxTime], an absolute start_after before start, and a
// wave (or the last wave's end) past MaxTime are errors.
func (p *Policy) Schedule(start time.Time) (Schedule, error) {
	if err := p.Validate(); err != nil {
		return Schedule{}, err
	}
	start = start.UTC().Truncate(time.Second)
	if start.Before(MinTime) || start.After(MaxTime) {
		return Schedule{}, &PolicyError{Msg: fmt.Sprintf("the rollout start %s is outside the years 0000 to 9999 that a manifest can hold", start.Format(time.RFC3339))}
	}
	var s Schedule
	seed := uint32(0)
	for i, w := range p.Waves {
		at, err := time.Parse(time.RFC3339, w.StartAfter)
		if err == nil {
			at = at.UTC().Truncate(time.Second)
			if at.Before(start) {
				return Schedule{}, &PolicyError{Wave: i + 1, Key: "start_after",
					Msg: fmt.Sprintf("%s is before the rollout's start %s", w.StartAfter, start.Format(time.RFC3339))}
			}
		} else {
			off, err := ParseOffset(w.StartAfter)
			if err != nil { // Validate has checked; kept for safety
				return Schedule{}, &PolicyError{Wave: i + 1, Key: "start_after", Msg: offsetMsg(err), Err: err}
			}
			at = start.Add(off)
		}
		if at.After(MaxTime) {
			return Schedule{}, &PolicyError{Wave: i + 1, Key: "start_after",
				Msg: fmt.Sprintf("%q after %s is past the end of year 9999, the latest time a manifest can hold", w.StartAfter, start.Format(time.RFC3339))}
		}
		s.Waves = append(s.Waves, Wave{Seed: seed, Start: at})
		seed = uint32(float32(w.FleetPercentage) / float32(100) * float32(MaxSeed))
	}
	if p.LastWaveDuration > 0 {
		last := s.Waves[len(s.Waves)-1].Start
		end := last.Add(p.LastWaveDuration)
		if end.After(MaxTime) {
			return Schedule{}, &PolicyError{Key: "last_wave_duration",
				Msg: fmt.Sprintf("the last wave would end past the end of year 9999 (%v after %s)", p.LastWaveDuration, last.Format(time.RFC3339))}
		}
		s.Waves = append(s.Waves, Wave{Seed: MaxSeed, Start: end})
	}
	if err := s.Validate(); err != nil {
		return Schedule{}, &PolicyError{Msg: offsetMsg(err), Err: err}
	}
	return s, nil
}

// offsetMsg is a ParseOffset error without the package prefix, for a
// PolicyError that wraps it.
func offsetMsg(err error) string {
	return strings.TrimPrefix(err.Error(), ErrOffset.Error()+": ")
}

var units = map[string]time.Duration{
	"s": time.Second, "sec": time.Second, "secs": time.Second, "second": time.Second, "seconds": time.Second,
	"m": time.Minute, "min": time.Minute, "mins": time.Minute, "minute": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hr": time.Hour, "hrs": time.Hour, "hour": time.Hour, "hours": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
	"w": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "weeks": 7 * 24 * time.Hour,
}

// tooLongError is ErrOffsetTooLong with its detail.
type tooLongError struct{ msg string }

func (e *tooLongError) Error() string { return ErrOffset.Error() + ": " + e.msg }
func (e *tooLongError) Is(target error) bool {
	return target == ErrOffsetTooLong || target == ErrOffset
}

// ParseOffset reads a duration written for people: "1 hour", "4 hours",
// "30 minutes", "1 day", "2 days 6 hours", "90m". Errors match ErrOffset;
// a total too long for a time.Duration (about 292 years) is one (matching
// ErrOffsetTooLong too), never a value that wrapped around.
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
	notDuration := fmt.Errorf("%w: %q is not a duration such as \"4 hours\" or \"1 day\"", ErrOffset, s)
	if len(toks) == 0 || len(toks)%2 != 0 {
		return 0, notDuration
	}
	tooLong := &tooLongError{fmt.Sprintf("%q is longer than the longest offset, %.0f years", s, math.Floor(float64(math.MaxInt64)/float64(365*24*time.Hour)))}
	var d time.Duration
	for i := 0; i < len(toks); i += 2 {
		u, ok := units[toks[i+1]]
		if !ok || toks[i] == "" || strings.Trim(toks[i], "0123456789") != "" {
			return 0, notDuration
		}
		n, err := strconv.ParseInt(toks[i], 10, 64)
		if err != nil { // only digits, so the number is too large
			return 0, tooLong
		}
		if n > int64(math.MaxInt64/u) {
			return 0, tooLong
		}
		part := time.Duration(n) * u
		if d > math.MaxInt64-part {
			return 0, tooLong
		}
		d += part
	}
	return d, nil
}
