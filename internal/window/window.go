// Package window holds maintenance windows: the times of the week when a
// host may reboot. It is pure logic: time is always a parameter, and
// nothing here reads the clock, the environment or a file (time zones come
// from the system's zoneinfo or, failing that, the copy embedded by
// time/tzdata, so a host image without /usr/share/zoneinfo still works).
//
// # Definition
//
// A window is a set of days of the week, a start time of day, a length
// and a time zone: {days = ["Sat","Sun"], start = "23:30", length = "3h",
// time_zone = "Europe/Berlin"} opens at 23:30 Berlin time each Saturday
// and Sunday and stays open for 3 hours of elapsed time, so it crosses
// midnight into Sunday and Monday. The days are the days on which a window
// opens.
//
// # Daylight saving time
//
// The start is a wall-clock time in the window's zone; the length is
// elapsed time from the moment the window opens. On the days the clocks
// change:
//
//   - Spring forward: when the start falls in the skipped hour (02:30 on
//     a day the clock jumps from 02:00 to 03:00), the window opens at the
//     jump, the first instant after which the clock reads past the start
//     (03:00 new time), and still lasts its full length.
//   - Fall back: when the start occurs twice (02:30 on a day the clock
//     goes back from 03:00 to 02:00), the window opens at the first
//     occurrence only and lasts its length once; it is not opened again
//     at the second 02:30.
//
// So every window opens exactly once on each of its days and is open for
// exactly its length, whatever the clocks do. (A day that a zone skipped
// whole, as Pacific/Apia did on 2011-12-30, opens at the jump into the
// next day, beside that day's own opening.)
package window

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // zones on hosts without /usr/share/zoneinfo
)

// MaxLength is the longest window.
const MaxLength = 7 * 24 * time.Hour

// ErrInvalid: a window's description is wrong. Errors from Parse wrap it.
var ErrInvalid = errors.New("window: invalid maintenance window")

// Spec is a window as written in a TOML (or JSON) configuration file:
//
//	{ days = ["Mon","Tue"], start = "02:00", length = "2h", time_zone = "Europe/Berlin" }
type Spec struct {
	// Days are the days the window opens: "Mon" ... "Sun" or the full
	// English names, in any case. At least one.
	Days []string `toml:"days" json:"days"`
	// Start is the wall-clock time of day the window opens, "HH:MM"
	// (24-hour clock) in TimeZone.
	Start string `toml:"start" json:"start"`
	// Length is a Go duration ("90m", "2h30m"), more than 0 and at most
	// MaxLength.
	Length string `toml:"length" json:"length"`
	// TimeZone is an IANA zone name ("Europe/Berlin"), "UTC" (the
	// default when empty), or "localtime" for the host's zone.
	TimeZone string `toml:"time_zone" json:"time_zone"`
}

// Window is a parsed maintenance window. It is immutable and safe for
// concurrent use.
type Window struct {
	days   [7]bool // indexed by time.Weekday
	start  int     // minutes after midnight
	length time.Duration
	loc    *time.Location
	spec   Spec
}

var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "sunday": time.Sunday,
	"mon": time.Monday, "monday": time.Monday,
	"tue": time.Tuesday, "tuesday": time.Tuesday,
	"wed": time.Wednesday, "wednesday": time.Wednesday,
	"thu": time.Thursday, "thursday": time.Thursday,
	"fri": time.Friday, "friday": time.Friday,
	"sat": time.Saturday, "saturday": time.Saturday,
}

// Parse checks a Spec and returns its Window. Errors wrap ErrInvalid and
// name the field.
func Parse(s Spec) (*Window, error) {
	w := &Window{spec: s}
	if len(s.Days) == 0 {
		return nil, fmt.Errorf(`%w: days: empty (list the days it opens, e.g. ["Sat","Sun"])`, ErrInvalid)
	}
	for _, d := range s.Days {
		wd, ok := dayNames[strings.ToLower(strings.TrimSpace(d))]
		if !ok {
			return nil, fmt.Errorf("%w: days: %q is not a day of the week (Mon ... Sun)", ErrInvalid, d)
		}
		w.days[wd] = true
	}
	start, err := parseClock(s.Start)
	if err != nil {
		return nil, fmt.Errorf("%w: start: %w", ErrInvalid, err)
	}
	w.start = start
	if s.Length == "" {
		return nil, fmt.Errorf(`%w: length: missing (e.g. "2h")`, ErrInvalid)
	}
	l, err := time.ParseDuration(s.Length)
	if err != nil {
		return nil, fmt.Errorf("%w: length: %w", ErrInvalid, err)
	}
	if l <= 0 || l > MaxLength {
		return nil, fmt.Errorf("%w: length: %v is not in (0, %v]", ErrInvalid, l, MaxLength)
	}
	w.length = l
	switch s.TimeZone {
	case "", "UTC":
		w.loc = time.UTC
	case "localtime":
		w.loc = time.Local
	default:
		// LoadLocation also takes "Local" and paths are refused by it;
		// "Local" is spelled "localtime" here so that it is deliberate.
		if s.TimeZone == "Local" || strings.HasPrefix(s.TimeZone, "/") || strings.Contains(s.TimeZone, "..") {
			return nil, fmt.Errorf("%w: time_zone: %q is not an IANA zone name", ErrInvalid, s.TimeZone)
		}
		loc, err := time.LoadLocation(s.TimeZone)
		if err != nil {
			return nil, fmt.Errorf("%w: time_zone: %w", ErrInvalid, err)
		}
		w.loc = loc
	}
	return w, nil
}

// parseClock parses "HH:MM" (or "H:MM") into minutes after midnight.
func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(h) < 1 || len(h) > 2 || len(m) != 2 {
		return 0, fmt.Errorf(`%q: want HH:MM, e.g. "02:30"`, s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || h[0] == '+' || h[0] == '-' || m[0] == '+' || m[0] == '-' || hh > 23 || mm > 59 {
		return 0, fmt.Errorf(`%q: want HH:MM between 00:00 and 23:59`, s)
	}
	return hh*60 + mm, nil
}

// Spec returns the description the window was parsed from.
func (w *Window) Spec() Spec { return w.spec }

// Length returns how long the window stays open.
func (w *Window) Length() time.Duration { return w.length }

// Location returns the window's time zone.
func (w *Window) Location() *time.Location { return w.loc }

// String describes the window, e.g. "Sat,Sun 23:30+3h0m0s Europe/Berlin".
func (w *Window) String() string {
	var days []string
	for d := time.Monday; d <= time.Saturday+1; d++ {
		if w.days[d%7] {
			days = append(days, (d % 7).String()[:3])
		}
	}
	return fmt.Sprintf("%s %02d:%02d+%v %s", strings.Join(days, ","), w.start/60, w.start%60, w.length, w.loc)
}

// Contains reports whether t is inside an occurrence of the window:
// opening <= t < opening+length.
func (w *Window) Contains(t time.Time) bool {
	start, _ := w.Next(t)
	return !start.After(t)
}

// Next returns the occurrence of the window that contains t or, when
// none does, the first one that opens after t: start <= t < end, or
// t < start. end is start plus the length. The times are in the window's
// zone. When occurrences overlap (a length over a day), the earliest one
// containing t is returned.
func (w *Window) Next(t time.Time) (start, end time.Time) {
	y, m, d := t.In(w.loc).Date()
	// An occurrence that contains t opened at most the length (plus a day
	// of zone offsets) before t.
	back := int(w.length/(24*time.Hour)) + 2
	for i := -back; i <= 8; i++ {
		date := time.Date(y, m, d+i, 12, 0, 0, 0, time.UTC) // civil date arithmetic
		if !w.days[date.Weekday()] {
			continue
		}
		s := opening(date, w.start, w.loc)
		if e := s.Add(w.length); e.After(t) {
			return s, e
		}
	}
	// Unreachable: at least one day is set, and an occurrence opens
	// within the next 8 days.
	panic("window: no occurrence within a week")
}

// opening returns the instant at which the wall clock in loc first reads
// minute min of date (a UTC noon giving the civil date), or, when that
// reading is skipped by a clock change, the instant of the jump.
func opening(date time.Time, min int, loc *time.Location) time.Time {
	y, m, d := date.Date()
	// wall is the wanted reading expressed as seconds, as if in UTC.
	wall := time.Date(y, m, d, min/60, min%60, 0, 0, time.UTC).Unix()
	// Zone offsets range from -12h to +14h, so the instants whose reading
	// is wall lie within [wall-14h, wall+12h]. Walk the zone periods that
	// cover that span, in order.
	t := time.Unix(wall-15*3600, 0).In(loc)
	segStart := t.Unix()
	for range 16 {
		_, off := t.Zone()
		_, zEnd := t.ZoneBounds()
		segEnd := int64(1 << 62)
		if !zEnd.IsZero() {
			segEnd = zEnd.Unix()
		}
		// In this period the reading runs over [segStart+off, segEnd+off).
		o := int64(off)
		switch {
		case wall >= segStart+o && wall < segEnd+o:
			return time.Unix(wall-o, 0).In(loc)
		case segStart+o > wall:
			// The clock jumped over the reading when this period began.
			return time.Unix(segStart, 0).In(loc)
		}
		if zEnd.IsZero() {
			break
		}
		t, segStart = zEnd.In(loc), segEnd
	}
	// Not reached for real zones; fall back on the library's choice.
	return time.Date(y, m, d, min/60, min%60, 0, 0, loc)
}

// Set is the union of several windows. The empty Set means "no windows
// configured": any time is allowed.
type Set []*Window

// ParseSet parses each Spec; the error names the failing window by index.
func ParseSet(specs []Spec) (Set, error) {
	s := make(Set, 0, len(specs))
	for i, sp := range specs {
		w, err := Parse(sp)
		if err != nil {
			return nil, fmt.Errorf("window %d: %w", i+1, err)
		}
		s = append(s, w)
	}
	return s, nil
}

// Contains reports whether t is inside one of the windows; always true for
// the empty Set.
func (s Set) Contains(t time.Time) bool {
	if len(s) == 0 {
		return true
	}
	for _, w := range s {
		if w.Contains(t) {
			return true
		}
	}
	return false
}

// Next returns the period of allowed time that contains t or, when t is
// outside every window, the first one after t. start is the earliest
// opening among the occurrences that contain t (or the next opening);
// end is extended through every occurrence that overlaps or touches the
// period, so a host inside the period may use all of it. For the empty
// Set it returns (t, zero time): open from now on, with no end.
func (s Set) Next(t time.Time) (start, end time.Time) {
	if len(s) == 0 {
		return t, time.Time{}
	}
	for i, w := range s {
		ws, we := w.Next(t)
		if i == 0 || ws.Before(start) || ws.Equal(start) && we.After(end) {
			start, end = ws, we
		}
	}
	// Extend the end through occurrences that begin before it ends; stop
	// after a bounded number of steps (windows that cover the whole week
	// would merge forever).
	for range 64 {
		grown := false
		for _, w := range s {
			// w.Next(end) contains end or opens after it; one that
			// opens exactly at end touches the period and joins it.
			if ws, we := w.Next(end); !ws.After(end) {
				end, grown = we, true
			}
		}
		if !grown {
			break
		}
	}
	return start, end
}
