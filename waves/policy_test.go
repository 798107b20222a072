package waves

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/updog/updog/internal/testutil"
)

// TestHostileParseOffsetOverflow: an offset whose sum does not fit time.Duration
// is refused (issue 8 item 12: "99999999 weeks" wrapped around, and
// tuftool check-expiry --within said "ok").
func TestHostileParseOffsetOverflow(t *testing.T) {
	for _, s := range []string{
		"99999999 weeks",
		"20000 weeks",
		"15250 weeks 1 week",          // each fits, the sum does not
		"2562047 hours 2562047 hours", // the same with hours
		"9223372037 s",                // just past the largest Duration in seconds
		"99999999999999999999 s",      // not even an int64
		"292 weeks 99999999 days",
	} {
		d, err := ParseOffset(s)
		if !errors.Is(err, ErrOffset) {
			t.Errorf("ParseOffset(%q) = %v, %v; want ErrOffset", s, d, err)
		}
	}
	// The largest offsets that fit are still read, exactly.
	for s, want := range map[string]time.Duration{
		"15250 weeks":            15250 * 7 * 24 * time.Hour,
		"2562047 hours":          2562047 * time.Hour,
		"9223372036 s":           9223372036 * time.Second,
		"2 days 6 hours":         54 * time.Hour,
		"90m":                    90 * time.Minute,
		"1 week 1 day 1h 1m 1 s": 8*24*time.Hour + time.Hour + time.Minute + time.Second,
	} {
		if d, err := ParseOffset(s); err != nil || d != want {
			t.Errorf("ParseOffset(%q) = %v, %v; want %v", s, d, err, want)
		}
	}
	for _, s := range []string{"", "soon", "1", "hour", "-1 hour", "1 fortnight", "1.5 hours"} {
		if _, err := ParseOffset(s); !errors.Is(err, ErrOffset) {
			t.Errorf("ParseOffset(%q): %v, want ErrOffset", s, err)
		}
	}
}

// TestHostileStartAfterOverflow: start_after = '20000 weeks' used to wrap
// around to a time before the rollout's start (1828 for a 2030 start), so
// the whole fleet would update at once.
func TestHostileStartAfterOverflow(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	text := "[[waves]]\nstart_after = '1 hour'\nfleet_percentage = 10\n[[waves]]\nstart_after = '20000 weeks'\nfleet_percentage = 100\n"
	p, err := ParsePolicy([]byte(text))
	if err == nil {
		s, serr := p.Schedule(start)
		t.Fatalf("accepted: schedule %+v, %v", s, serr)
	}
	var pe *PolicyError
	if !errors.As(err, &pe) || !errors.Is(err, ErrPolicy) || !errors.Is(err, ErrOffset) || pe.Wave != 2 || pe.Key != "start_after" {
		t.Errorf("error %v (%+v): want a PolicyError for wave 2's start_after wrapping ErrOffset", err, pe)
	}
	// The same through a Policy built in code.
	p = &Policy{Waves: []PolicyWave{{"1 hour", 10}, {"20000 weeks", 100}}}
	if s, err := p.Schedule(start); !errors.Is(err, ErrPolicy) {
		t.Errorf("Schedule: %+v, %v", s, err)
	}
}

// TestScheduleTimeBounds: no schedule holds a time past year 9999 (RFC 3339
// cannot write it, so validate would refuse the manifest) or a wave before
// the rollout's start.
func TestScheduleTimeBounds(t *testing.T) {
	p := &Policy{Waves: []PolicyWave{{"1 hour", 10}, {"1 day", 100}}}
	for _, start := range []time.Time{
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), // the second wave falls in 10000
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		s, err := p.Schedule(start)
		if !errors.Is(err, ErrPolicy) {
			t.Errorf("start %v: %+v, %v; want ErrPolicy", start, s, err)
		}
	}
	if s, err := p.Schedule(time.Date(9999, 12, 30, 0, 0, 0, 0, time.UTC)); err != nil || s.Waves[1].Start.Year() != 9999 {
		t.Errorf("a schedule ending in 9999: %+v, %v", s, err)
	}
	// last_wave_duration past 9999.
	p.LastWaveDuration = 200 * 365 * 24 * time.Hour
	if s, err := p.Schedule(time.Date(9900, 1, 1, 0, 0, 0, 0, time.UTC)); !errors.Is(err, ErrPolicy) {
		t.Errorf("last_wave_duration past 9999: %+v, %v", s, err)
	}
	// An absolute start_after before the rollout's start.
	p = &Policy{Waves: []PolicyWave{{"2020-01-01T00:00:00Z", 10}, {"1 day", 100}}}
	if s, err := p.Schedule(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)); !errors.Is(err, ErrPolicy) {
		t.Errorf("absolute time before the start: %+v, %v", s, err)
	}
	p = &Policy{Waves: []PolicyWave{{"2024-01-01T06:00:00Z", 10}, {"1 day", 100}}}
	if _, err := p.Schedule(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Errorf("absolute time after the start: %v", err)
	}
	// Schedule.Validate refuses times RFC 3339 cannot write.
	for _, bad := range []Schedule{
		{Waves: []Wave{{0, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}},
		{Waves: []Wave{{0, time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC)}}},
		{Waves: []Wave{{0, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}}, Pauses: []Pause{{From: time.Date(10001, 1, 1, 0, 0, 0, 0, time.UTC)}}},
		{Waves: []Wave{{0, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}},
			Pauses: []Pause{{From: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), To: time.Date(10001, 1, 1, 0, 0, 0, 0, time.UTC)}}},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrSchedule) {
			t.Errorf("Validate(%+v) = %v, want ErrSchedule", bad, err)
		}
	}
	if err := (Schedule{Waves: []Wave{{0, MaxTime}}}).Validate(); err != nil {
		t.Errorf("MaxTime refused: %v", err)
	}
}

// TestPolicyTOMLErrors: the policy is real TOML; unknown keys, duplicate
// keys and wrong types are errors naming the wave and the key.
func TestPolicyTOMLErrors(t *testing.T) {
	const ok = "[[waves]]\nstart_after = '1 hour'\nfleet_percentage = 10\n"
	for _, c := range []struct {
		name, text string
		wave       int
		key        string
	}{
		{"unknown key in a wave", ok + "[[waves]]\nstart_after = '2 hours'\nfleet_percent = 100\n", 2, "fleet_percent"},
		{"unknown top-level key", "colour = 'red'\n" + ok, 0, "colour"},
		{"unknown table", ok + "[wave]\n", 0, "wave"},
		{"unknown subtable of a wave", ok + "[waves.extra]\nx = 1\n", 1, "extra"},
		{"dotted unknown key", ok + "extra.x = 1\n", 1, "extra.x"},
		{"duplicate key", ok + "[[waves]]\nstart_after = '2 hours'\nstart_after = '3 hours'\nfleet_percentage = 100\n", 2, "start_after"},
		{"duplicate top-level key", "last_wave_duration = '1 day'\nlast_wave_duration = '2 days'\n" + ok, 0, "last_wave_duration"},
		{"percentage as string", ok + "[[waves]]\nstart_after = '2 hours'\nfleet_percentage = '100'\n", 2, "fleet_percentage"},
		{"percentage as float", ok + "[[waves]]\nstart_after = '2 hours'\nfleet_percentage = 100.0\n", 2, "fleet_percentage"},
		{"huge percentage", ok + "[[waves]]\nstart_after = '2 hours'\nfleet_percentage = 9223372036854775807\n", 2, "fleet_percentage"},
		{"start_after as integer", "[[waves]]\nstart_after = 3600\nfleet_percentage = 100\n", 1, "start_after"},
		{"start_after as TOML datetime", "[[waves]]\nstart_after = 2024-01-01T00:00:00Z\nfleet_percentage = 100\n", 1, "start_after"},
		{"start_after unquoted", "[[waves]]\nstart_after = 1 hour\nfleet_percentage = 100\n", 1, "start_after"},
		{"last_wave_duration as integer", "last_wave_duration = 86400\n" + ok, 0, "last_wave_duration"},
		{"last_wave_duration zero", "last_wave_duration = '0 s'\n" + ok, 0, "last_wave_duration"},
		{"waves not a table", "waves = 5\n", 0, "waves"},
		{"waves a plain table", "[waves]\nstart_after = '1 hour'\n", 0, "waves"},
		{"missing percentage", "[[waves]]\nstart_after = '1 hour'\n", 1, "fleet_percentage"},
		{"missing start_after", "[[waves]]\nfleet_percentage = 100\n", 1, "start_after"},
		{"bad offset", "[[waves]]\nstart_after = 'soon'\nfleet_percentage = 100\n", 1, "start_after"},
	} {
		_, err := ParsePolicy([]byte(c.text))
		var pe *PolicyError
		if !errors.As(err, &pe) || !errors.Is(err, ErrPolicy) {
			t.Errorf("%s: %v, want a *PolicyError", c.name, err)
			continue
		}
		if pe.Wave != c.wave || pe.Key != c.key {
			t.Errorf("%s: error names wave %d key %q, want wave %d key %q: %v", c.name, pe.Wave, pe.Key, c.wave, c.key, err)
		}
		if c.key != "" && !strings.Contains(err.Error(), c.key) {
			t.Errorf("%s: the message does not name %s: %v", c.name, c.key, err)
		}
	}
}

// TestPolicyTOMLSyntax: what the TOML standard allows is read, whatever the
// old hand-written subset accepted or not.
func TestPolicyTOMLSyntax(t *testing.T) {
	p, err := ParsePolicy([]byte("last_wave_duration = \"\"\"2 days\"\"\"\n[[waves]]\n  start_after = \"1 hour\"\n  fleet_percentage = 1_0\n[[ waves ]]\nstart_after = '''1 day'''\n\"fleet_percentage\" = 100\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.LastWaveDuration != 48*time.Hour || len(p.Waves) != 2 || p.Waves[0].FleetPercentage != 10 || p.Waves[1].StartAfter != "1 day" {
		t.Fatalf("%+v", p)
	}
	if _, err := ParsePolicy([]byte("[[waves]\n")); !errors.Is(err, ErrPolicy) {
		t.Errorf("broken TOML: %v", err)
	}
	var pe *PolicyError
	if _, err := ParsePolicy([]byte("\n\n[[waves]]\nstart_after = '1 hour\n")); !errors.As(err, &pe) || pe.Line != 4 {
		t.Errorf("syntax error: %v, want one on line 4", err)
	}
}

// TestBottlerocketPoliciesParse: every policy file Bottlerocket ships
// parses, with the waves it lists.
func TestBottlerocketPoliciesParse(t *testing.T) {
	want := map[string][]PolicyWave{
		"default-waves":            {{"1 hour", 1}, {"4 hours", 5}, {"1 day", 15}, {"2 days", 40}, {"4 days", 60}, {"5 days", 90}, {"6 days", 100}},
		"ohno":                     {{"30 minutes", 5}, {"60 minutes", 25}, {"120 minutes", 50}, {"150 minutes", 90}, {"180 minutes", 100}},
		"updog-test-default_waves": {{"12 hours", 1}, {"1 day", 10}, {"3 days", 25}, {"6 days", 100}},
	}
	for _, name := range policies {
		p := loadPolicy(t, name)
		if w, ok := want[name]; ok && !equalWaves(p.Waves, w) {
			t.Errorf("%s: %+v, want %+v", name, p.Waves, w)
		}
	}
}

func equalWaves(a, b []PolicyWave) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzParsePolicy: arbitrary text never panics; a policy that parses and
// schedules has every wave inside [start, MaxTime], in order, and a valid
// schedule.
func FuzzParsePolicy(f *testing.F) {
	dir := filepath.Join(testutil.ProjectRoot(), "..", "shared", "testdata", "bottlerocket", "waves")
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".toml") {
				if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
					f.Add(b, int64(1704067200))
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, text []byte, startSec int64) {
		p, err := ParsePolicy(text)
		if err != nil {
			if !errors.Is(err, ErrPolicy) {
				t.Fatalf("error does not match ErrPolicy: %v", err)
			}
			return
		}
		start := time.Unix(startSec, 0).UTC()
		s, err := p.Schedule(start)
		if err != nil {
			if !errors.Is(err, ErrPolicy) && !errors.Is(err, ErrSchedule) {
				t.Fatalf("schedule error matches neither ErrPolicy nor ErrSchedule: %v", err)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("Schedule made an invalid schedule: %v", err)
		}
		for i, w := range s.Waves {
			if w.Start.Before(start.Truncate(time.Second)) || w.Start.After(MaxTime) {
				t.Fatalf("wave %d starts at %v, outside [%v, %v]", i, w.Start, start, MaxTime)
			}
		}
		if p.LastWaveDuration < 0 {
			t.Fatalf("negative last_wave_duration %v", p.LastWaveDuration)
		}
	})
}
