package window

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func mustParse(t *testing.T, s Spec) *Window {
	t.Helper()
	w, err := Parse(s)
	if err != nil {
		t.Fatalf("Parse(%+v): %v", s, err)
	}
	return w
}

func mustLoad(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// at is a fake clock reading: a wall-clock time in loc. It refuses
// readings that do not exist or are ambiguous there, so tests say which
// instant they mean (use utc for those).
func at(t *testing.T, loc *time.Location, s string) time.Time {
	t.Helper()
	tm, err := time.ParseInLocation("2006-01-02 15:04:05", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func utc(t *testing.T, s string) time.Time { return at(t, time.UTC, s) }

func TestParseRefuses(t *testing.T) {
	good := Spec{Days: []string{"Mon"}, Start: "02:00", Length: "2h", TimeZone: "Europe/Berlin"}
	for _, tc := range []struct {
		name string
		edit func(*Spec)
	}{
		{"no-days", func(s *Spec) { s.Days = nil }},
		{"bad-day", func(s *Spec) { s.Days = []string{"Mon", "Funday"} }},
		{"day-number", func(s *Spec) { s.Days = []string{"1"} }},
		{"no-start", func(s *Spec) { s.Start = "" }},
		{"start-24", func(s *Spec) { s.Start = "24:00" }},
		{"start-60", func(s *Spec) { s.Start = "01:60" }},
		{"start-seconds", func(s *Spec) { s.Start = "01:00:00" }},
		{"start-1digit-min", func(s *Spec) { s.Start = "1:5" }},
		{"start-sign", func(s *Spec) { s.Start = "+1:05" }},
		{"start-neg", func(s *Spec) { s.Start = "-1:05" }},
		{"start-ampm", func(s *Spec) { s.Start = "2pm" }},
		{"no-length", func(s *Spec) { s.Length = "" }},
		{"length-zero", func(s *Spec) { s.Length = "0s" }},
		{"length-negative", func(s *Spec) { s.Length = "-1h" }},
		{"length-too-long", func(s *Spec) { s.Length = "169h" }},
		{"length-overflow", func(s *Spec) { s.Length = "9999999999999h" }},
		{"length-no-unit", func(s *Spec) { s.Length = "2" }},
		{"zone-unknown", func(s *Spec) { s.TimeZone = "Mars/Olympus" }},
		{"zone-path", func(s *Spec) { s.TimeZone = "/etc/localtime" }},
		{"zone-dotdot", func(s *Spec) { s.TimeZone = "../../etc/passwd" }},
		{"zone-Local", func(s *Spec) { s.TimeZone = "Local" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			s.Days = append([]string(nil), good.Days...)
			tc.edit(&s)
			if _, err := Parse(s); !errors.Is(err, ErrInvalid) {
				t.Errorf("Parse(%+v) = %v, want ErrInvalid", s, err)
			}
		})
	}
	if _, err := Parse(good); err != nil {
		t.Fatal(err)
	}
}

func TestParseAccepts(t *testing.T) {
	w := mustParse(t, Spec{Days: []string{"monday", "SAT", " Sun "}, Start: "7:05", Length: "90m"})
	if got := w.String(); got != "Mon,Sat,Sun 07:05+1h30m0s UTC" {
		t.Errorf("String() = %q", got)
	}
	if w.Location() != time.UTC || w.Length() != 90*time.Minute {
		t.Errorf("zone %v length %v", w.Location(), w.Length())
	}
	if mustParse(t, Spec{Days: []string{"Mon"}, Start: "00:00", Length: "1m", TimeZone: "localtime"}).Location() != time.Local {
		t.Error("localtime is not time.Local")
	}
}

type probe struct {
	at       time.Time
	contains bool
	start    time.Time // of Next(at)
}

func check(t *testing.T, w *Window, probes []probe) {
	t.Helper()
	for _, p := range probes {
		if got := w.Contains(p.at); got != p.contains {
			t.Errorf("%v: Contains(%v) = %v, want %v", w, p.at.UTC(), got, p.contains)
		}
		s, e := w.Next(p.at)
		if !s.Equal(p.start) {
			t.Errorf("%v: Next(%v) start = %v, want %v", w, p.at.UTC(), s.UTC(), p.start.UTC())
		}
		if e.Sub(s) != w.Length() {
			t.Errorf("%v: Next(%v) lasts %v, want %v", w, p.at.UTC(), e.Sub(s), w.Length())
		}
		if s.Location() != w.Location() {
			t.Errorf("Next returns times in %v, want %v", s.Location(), w.Location())
		}
	}
}

func TestWindowUTC(t *testing.T) {
	// 2024-06-01 is a Saturday.
	w := mustParse(t, Spec{Days: []string{"Sat"}, Start: "02:00", Length: "2h"})
	check(t, w, []probe{
		{utc(t, "2024-06-01 01:59:59"), false, utc(t, "2024-06-01 02:00:00")},
		{utc(t, "2024-06-01 02:00:00"), true, utc(t, "2024-06-01 02:00:00")},
		{utc(t, "2024-06-01 03:59:59"), true, utc(t, "2024-06-01 02:00:00")},
		{utc(t, "2024-06-01 04:00:00"), false, utc(t, "2024-06-08 02:00:00")},
		{utc(t, "2024-06-05 12:00:00"), false, utc(t, "2024-06-08 02:00:00")},
	})
}

// TestWindowCrossesMidnight: the days are the opening days; the window
// runs into the next day.
func TestWindowCrossesMidnight(t *testing.T) {
	w := mustParse(t, Spec{Days: []string{"Sat", "Sun"}, Start: "23:30", Length: "3h"})
	check(t, w, []probe{
		{utc(t, "2024-06-01 23:29:59"), false, utc(t, "2024-06-01 23:30:00")}, // Sat
		{utc(t, "2024-06-02 00:00:00"), true, utc(t, "2024-06-01 23:30:00")},  // Sun, from Sat
		{utc(t, "2024-06-02 02:29:59"), true, utc(t, "2024-06-01 23:30:00")},
		{utc(t, "2024-06-02 02:30:00"), false, utc(t, "2024-06-02 23:30:00")},
		{utc(t, "2024-06-03 01:00:00"), true, utc(t, "2024-06-02 23:30:00")}, // Mon, from Sun
		{utc(t, "2024-06-03 02:30:00"), false, utc(t, "2024-06-08 23:30:00")},
		{utc(t, "2024-05-31 23:45:00"), false, utc(t, "2024-06-01 23:30:00")}, // Fri: not a day
	})
}

// TestWindowLongerThanADay: occurrences overlap; the earliest containing
// one is returned.
func TestWindowLongerThanADay(t *testing.T) {
	w := mustParse(t, Spec{Days: []string{"Mon", "Tue"}, Start: "12:00", Length: "36h"})
	check(t, w, []probe{
		{utc(t, "2024-06-03 11:00:00"), false, utc(t, "2024-06-03 12:00:00")}, // Mon
		{utc(t, "2024-06-04 13:00:00"), true, utc(t, "2024-06-03 12:00:00")},  // Tue: both contain it
		{utc(t, "2024-06-05 00:00:00"), true, utc(t, "2024-06-04 12:00:00")},  // Wed: Mon's ended
		{utc(t, "2024-06-06 00:00:00"), false, utc(t, "2024-06-10 12:00:00")},
	})
}

func TestWindowTimeZone(t *testing.T) {
	tokyo := mustLoad(t, "Asia/Tokyo")
	w := mustParse(t, Spec{Days: []string{"Mon"}, Start: "01:00", Length: "1h", TimeZone: "Asia/Tokyo"})
	// Monday 01:00 in Tokyo is Sunday 16:00 UTC.
	check(t, w, []probe{
		{utc(t, "2024-06-02 16:30:00"), true, at(t, tokyo, "2024-06-03 01:00:00")},
		{utc(t, "2024-06-03 16:30:00"), false, at(t, tokyo, "2024-06-10 01:00:00")},
	})
}

// TestSpringForward: Europe/Berlin skips 02:00-03:00 on 2024-03-31
// (01:00 UTC). A window starting in the gap opens at the jump and lasts
// its whole length; one starting before the gap lasts its length of
// elapsed time (so it ends an hour later on the wall clock).
func TestSpringForward(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	gap := mustParse(t, Spec{Days: []string{"Sun"}, Start: "02:30", Length: "1h", TimeZone: "Europe/Berlin"})
	check(t, gap, []probe{
		{utc(t, "2024-03-31 00:59:59"), false, utc(t, "2024-03-31 01:00:00")},
		{utc(t, "2024-03-31 01:00:00"), true, utc(t, "2024-03-31 01:00:00")},
		{utc(t, "2024-03-31 01:59:59"), true, utc(t, "2024-03-31 01:00:00")},
		{utc(t, "2024-03-31 02:00:00"), false, at(t, berlin, "2024-04-07 02:30:00")},
		// The week before and after: ordinary.
		{utc(t, "2024-03-24 01:30:00"), true, at(t, berlin, "2024-03-24 02:30:00")},
		{utc(t, "2024-04-07 00:30:00"), true, at(t, berlin, "2024-04-07 02:30:00")},
	})
	if s, _ := gap.Next(utc(t, "2024-03-31 00:00:00")); s.Format("15:04 MST") != "03:00 CEST" {
		t.Errorf("opens at %s, want 03:00 CEST (the jump)", s.Format("15:04 MST"))
	}
	before := mustParse(t, Spec{Days: []string{"Sun"}, Start: "01:30", Length: "2h", TimeZone: "Europe/Berlin"})
	check(t, before, []probe{
		{utc(t, "2024-03-31 00:30:00"), true, utc(t, "2024-03-31 00:30:00")},
		{utc(t, "2024-03-31 02:29:59"), true, utc(t, "2024-03-31 00:30:00")}, // 04:29:59 CEST
		{utc(t, "2024-03-31 02:30:00"), false, at(t, berlin, "2024-04-07 01:30:00")},
	})
	// America/New_York skips 02:00-03:00 on 2024-03-10 (07:00 UTC).
	ny := mustParse(t, Spec{Days: []string{"Sun"}, Start: "02:00", Length: "30m", TimeZone: "America/New_York"})
	check(t, ny, []probe{
		{utc(t, "2024-03-10 06:59:59"), false, utc(t, "2024-03-10 07:00:00")},
		{utc(t, "2024-03-10 07:29:59"), true, utc(t, "2024-03-10 07:00:00")},
	})
}

// TestFallBack: Europe/Berlin repeats 02:00-03:00 on 2024-10-27 (the
// first pass ends at 01:00 UTC). A window starting at 02:30 opens at the
// first 02:30 (CEST) only, and lasts its length of elapsed time.
func TestFallBack(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	w := mustParse(t, Spec{Days: []string{"Sun"}, Start: "02:30", Length: "1h", TimeZone: "Europe/Berlin"})
	check(t, w, []probe{
		{utc(t, "2024-10-27 00:29:59"), false, utc(t, "2024-10-27 00:30:00")},        // 02:29:59 CEST
		{utc(t, "2024-10-27 00:30:00"), true, utc(t, "2024-10-27 00:30:00")},         // first 02:30
		{utc(t, "2024-10-27 01:29:59"), true, utc(t, "2024-10-27 00:30:00")},         // 02:29:59 CET
		{utc(t, "2024-10-27 01:30:00"), false, at(t, berlin, "2024-11-03 02:30:00")}, // second 02:30: not again
	})
	if s, _ := w.Next(utc(t, "2024-10-27 00:00:00")); s.Format("15:04 MST") != "02:30 CEST" {
		t.Errorf("opens at %s, want 02:30 CEST (the first one)", s.Format("15:04 MST"))
	}
	// A window in the repeated hour lasting 2h ends at 03:30 CET on the
	// wall clock: two hours after it opened.
	long := mustParse(t, Spec{Days: []string{"Sun"}, Start: "02:15", Length: "2h", TimeZone: "Europe/Berlin"})
	if _, e := long.Next(utc(t, "2024-10-27 00:00:00")); e.Format("15:04 MST") != "03:15 CET" {
		t.Errorf("ends at %s, want 03:15 CET", e.Format("15:04 MST"))
	}
}

// TestOncePerDayAcrossYears walks every occurrence of windows in zones
// with odd DST rules (30-minute shifts, southern hemisphere, a day
// skipped) over several years, as a fake clock would, checking that each
// opens once on each of its days, lasts its length, reads the start time
// on the clock unless the clock jumped over it, and that Contains agrees
// with Next in between.
func TestOncePerDayAcrossYears(t *testing.T) {
	for _, zone := range []string{"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Pacific/Apia", "Asia/Kolkata"} {
		for _, start := range []string{"00:00", "00:30", "01:30", "02:00", "02:30", "03:00", "23:59"} {
			w := mustParse(t, Spec{Days: []string{"Mon", "Wed", "Fri", "Sat", "Sun"}, Start: start, Length: "90m", TimeZone: zone})
			t.Run(zone+"/"+start, func(t *testing.T) {
				now := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)
				stop := time.Date(2013, 1, 1, 0, 0, 0, 0, time.UTC)
				var prevStart, prevEnd time.Time
				seenDays := map[string]bool{}
				for now.Before(stop) {
					s, e := w.Next(now)
					if !s.After(prevStart) {
						t.Fatalf("Next(%v) = %v, not after the previous opening %v", now, s, prevStart)
					}
					if e.Sub(s) != 90*time.Minute {
						t.Fatalf("occurrence %v-%v lasts %v", s, e, e.Sub(s))
					}
					// Only a clock jump may move the opening, and then it
					// is the instant of the jump; a whole day skipped
					// (Apia, 2011-12-30) opens at the jump into the next.
					_, offBefore := s.Add(-time.Second).Zone()
					_, offAfter := s.Zone()
					jump := offBefore != offAfter
					day := s.Format("2006-01-02")
					if prevJump, seen := seenDays[day]; seen && !jump && !prevJump {
						t.Fatalf("opens twice on %s (%v)", day, s)
					}
					seenDays[day] = jump
					if got := s.Format("15:04"); got != start && !jump {
						t.Fatalf("opens at %s, want %s (no clock change at %v)", got, start, s)
					}
					// Contains agrees with Next just before, inside and after.
					if w.Contains(s.Add(-time.Second)) && !prevEnd.After(s.Add(-time.Second)) {
						t.Fatalf("Contains just before %v", s)
					}
					if !w.Contains(s) || !w.Contains(e.Add(-time.Second)) {
						t.Fatalf("not Contains inside %v-%v", s, e)
					}
					prevStart, prevEnd = s, e
					now = e
				}
				if n := len(seenDays); n < 3*52*5-5 || n > 3*53*5 {
					t.Errorf("%d openings in 3 years, want about %d", n, 3*52*5)
				}
			})
		}
	}
}

func TestSet(t *testing.T) {
	empty := Set{}
	now := utc(t, "2024-06-05 12:00:00")
	if !empty.Contains(now) {
		t.Error("the empty set forbids")
	}
	if s, e := empty.Next(now); !s.Equal(now) || !e.IsZero() {
		t.Errorf("empty Next = %v, %v", s, e)
	}
	set, err := ParseSet([]Spec{
		{Days: []string{"Sat"}, Start: "22:00", Length: "2h"},
		{Days: []string{"Sun"}, Start: "00:00", Length: "3h"}, // touches the first
		{Days: []string{"Wed"}, Start: "01:00", Length: "1h"},
		{Days: []string{"Sun"}, Start: "02:00", Length: "2h"}, // overlaps the second
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at         time.Time
		contains   bool
		start, end time.Time
	}{
		{utc(t, "2024-06-01 21:00:00"), false, utc(t, "2024-06-01 22:00:00"), utc(t, "2024-06-02 04:00:00")},
		{utc(t, "2024-06-01 23:00:00"), true, utc(t, "2024-06-01 22:00:00"), utc(t, "2024-06-02 04:00:00")},
		{utc(t, "2024-06-02 03:30:00"), true, utc(t, "2024-06-02 02:00:00"), utc(t, "2024-06-02 04:00:00")},
		{utc(t, "2024-06-02 04:00:00"), false, utc(t, "2024-06-05 01:00:00"), utc(t, "2024-06-05 02:00:00")},
	} {
		if got := set.Contains(tc.at); got != tc.contains {
			t.Errorf("Contains(%v) = %v", tc.at, got)
		}
		if s, e := set.Next(tc.at); !s.Equal(tc.start) || !e.Equal(tc.end) {
			t.Errorf("Next(%v) = %v-%v, want %v-%v", tc.at, s, e, tc.start, tc.end)
		}
	}
	if _, err := ParseSet([]Spec{{Days: []string{"Sat"}, Start: "22:00", Length: "2h"}, {}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseSet with a bad window: %v", err)
	}
}

// TestSetCoveringTheWeek: merging windows that cover every minute stops.
func TestSetCoveringTheWeek(t *testing.T) {
	set, err := ParseSet([]Spec{{Days: []string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}, Start: "00:00", Length: "24h"}})
	if err != nil {
		t.Fatal(err)
	}
	now := utc(t, "2024-06-05 12:00:00")
	s, e := set.Next(now)
	if s.After(now) || !e.After(now.Add(7*24*time.Hour)) {
		t.Errorf("Next = %v-%v", s, e)
	}
}

func ExampleWindow_Next() {
	w, err := Parse(Spec{Days: []string{"Sat", "Sun"}, Start: "23:30", Length: "3h", TimeZone: "Europe/Berlin"})
	if err != nil {
		panic(err)
	}
	now := time.Date(2024, 6, 5, 12, 0, 0, 0, time.UTC) // a Wednesday
	start, end := w.Next(now)
	fmt.Println(w.Contains(now), start.Format(time.RFC3339), end.Format(time.RFC3339))
	// Output: false 2024-06-08T23:30:00+02:00 2024-06-09T02:30:00+02:00
}

// TestSpecTOML: the Spec's tags match the documented TOML form, as the
// [reboot] table's windows are written.
func TestSpecTOML(t *testing.T) {
	var cfg struct {
		Windows []Spec `toml:"windows"`
	}
	doc := `windows = [
  { days = ["Mon","Tue"], start = "02:00", length = "2h", time_zone = "Europe/Berlin" },
  { days = ["Sat"], start = "23:30", length = "3h" },
]`
	md, err := toml.Decode(doc, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if und := md.Undecoded(); len(und) != 0 {
		t.Fatalf("undecoded keys %v", und)
	}
	set, err := ParseSet(cfg.Windows)
	if err != nil {
		t.Fatal(err)
	}
	if len(set) != 2 || set[0].String() != "Mon,Tue 02:00+2h0m0s Europe/Berlin" || set[1].String() != "Sat 23:30+3h0m0s UTC" {
		t.Errorf("parsed %v", set)
	}
}

// FuzzParse: any Spec either fails with ErrInvalid or gives a window whose
// Next and Contains agree and never panic.
func FuzzParse(f *testing.F) {
	f.Add("Mon,Sun", "02:30", "2h", "Europe/Berlin", int64(1711846800))
	f.Add("sat", "23:59", "168h", "Pacific/Apia", int64(1325239200))
	f.Add("", "24:00", "-1s", "Local", int64(0))
	f.Fuzz(func(t *testing.T, days, start, length, zone string, unix int64) {
		w, err := Parse(Spec{Days: strings.Split(days, ","), Start: start, Length: length, TimeZone: zone})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		now := time.Unix(unix%(1<<35), 0)
		s, e := w.Next(now)
		if e.Sub(s) != w.Length() || !e.After(now) {
			t.Fatalf("Next(%v) = %v-%v", now, s, e)
		}
		if w.Contains(now) != !s.After(now) {
			t.Fatalf("Contains(%v) disagrees with Next %v", now, s)
		}
	})
}
