// Package cron parses the five-field cron expressions of repeat schedules
// and finds their fire times.
//
// Fields are minute (0-59), hour (0-23), day of month (1-31), month (1-12 or
// JAN-DEC) and day of week (0-7 or SUN-SAT; 0 and 7 are Sunday). Each is *,
// a value, a range a-b, a step */n or a-b/n, or a comma list of those. The
// day fields combine as in Vixie cron: when neither starts with * a day
// matching either fires ("0 0 1 * MON": the 1st and every Monday); when one
// does, a day must match both ("0 0 */2 * MON": Mondays with an odd date). The descriptors @yearly (@annually), @monthly, @weekly, @daily
// (@midnight) and @hourly stand for their usual expressions. A local time
// that does not exist (skipped by a daylight-saving change) does not fire
// that day; one that occurs twice fires at its first occurrence.
package cron

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Schedule is a parsed expression, evaluated in one location.
type Schedule struct {
	minute, hour, dom, month, dow uint64 // bit i set: value i matches
	domStar, dowStar              bool
	loc                           *time.Location
}

var descriptors = map[string]string{
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
	"@monthly":  "0 0 1 * *",
	"@weekly":   "0 0 * * 0",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@hourly":   "0 * * * *",
}

type field struct {
	name     string
	min, max int
	names    []string // names[i] stands for min+i
}

var (
	fMinute = field{name: "minute", min: 0, max: 59}
	fHour   = field{name: "hour", min: 0, max: 23}
	fDom    = field{name: "day of month", min: 1, max: 31}
	fMonth  = field{name: "month", min: 1, max: 12,
		names: []string{"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}}
	fDow = field{name: "day of week", min: 0, max: 7,
		names: []string{"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}}
)

// Parse parses expr, to be evaluated in loc (nil: UTC).
func Parse(expr string, loc *time.Location) (*Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	spec := strings.TrimSpace(expr)
	if d, ok := descriptors[strings.ToLower(spec)]; ok {
		spec = d
	} else if strings.HasPrefix(spec, "@") {
		return nil, fmt.Errorf("cron %q: unknown descriptor (known: @yearly @annually @monthly @weekly @daily @midnight @hourly)", expr)
	}
	fs := strings.Fields(spec)
	if len(fs) != 5 {
		return nil, fmt.Errorf("cron %q: %d fields, want 5 (minute hour day-of-month month day-of-week)", expr, len(fs))
	}
	star := func(f string) bool { return strings.HasPrefix(f, "*") || strings.HasPrefix(f, "?") }
	s := &Schedule{loc: loc, domStar: star(fs[2]), dowStar: star(fs[4])}
	var err error
	for i, p := range []struct {
		f   field
		dst *uint64
	}{{fMinute, &s.minute}, {fHour, &s.hour}, {fDom, &s.dom}, {fMonth, &s.month}, {fDow, &s.dow}} {
		if *p.dst, err = parseField(fs[i], p.f); err != nil {
			return nil, fmt.Errorf("cron %q: %w", expr, err)
		}
	}
	if s.dow&(1<<7) != 0 {
		s.dow |= 1 // 7 is Sunday too
	}
	if s.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, loc)).IsZero() {
		return nil, fmt.Errorf("cron %q: never fires (no such day)", expr)
	}
	return s, nil
}

func parseField(text string, f field) (uint64, error) {
	var bits uint64
	for _, part := range strings.Split(text, ",") {
		rng, stepText, hasStep := strings.Cut(part, "/")
		lo, hi := f.min, f.max
		if f.name == "day of week" {
			hi = 6 // * means 0-6; 7 only when written
		}
		switch {
		case rng == "*" || rng == "?":
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var err error
			if lo, err = value(a, f); err != nil {
				return 0, err
			}
			if hi, err = value(b, f); err != nil {
				return 0, err
			}
			if lo > hi {
				return 0, fmt.Errorf("%s range %q runs backwards", f.name, rng)
			}
		default:
			v, err := value(rng, f)
			if err != nil {
				return 0, err
			}
			lo, hi = v, v
			if hasStep {
				hi = f.max // "5/15" means 5-max/15
			}
		}
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("%s step %q: want a positive number", f.name, stepText)
			}
			step = n
		}
		for v := lo; v <= hi; v += step {
			bits |= 1 << uint(v)
		}
	}
	return bits, nil
}

func value(text string, f field) (int, error) {
	for i, n := range f.names {
		if strings.EqualFold(text, n) {
			return f.min + i, nil
		}
	}
	v, err := strconv.Atoi(text)
	if err != nil {
		return 0, fmt.Errorf("%s %q: not a number", f.name, text)
	}
	if v < f.min || v > f.max {
		return 0, fmt.Errorf("%s %d: out of range %d-%d", f.name, v, f.min, f.max)
	}
	return v, nil
}

const allHours = 1<<24 - 1

// Next returns the first fire time strictly after t, or the zero time when
// there is none within five years.
func (s *Schedule) Next(t time.Time) time.Time {
	t = t.Truncate(time.Minute).Add(time.Minute).In(s.loc)
	limit := t.Year() + 5
	for t.Year() <= limit {
		if s.month&(1<<uint(t.Month())) == 0 {
			t = firstOccurrence(time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, s.loc))
			continue
		}
		if !s.dayMatches(t) {
			t = firstOccurrence(time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, s.loc))
			continue
		}
		if s.hour&(1<<uint(t.Hour())) == 0 {
			next := firstOccurrence(time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, s.loc))
			if !next.After(t) { // a repeated hour at a DST change
				next = t.Truncate(time.Hour).Add(time.Hour)
			}
			t = next
			continue
		}
		if s.minute&(1<<uint(t.Minute())) == 0 {
			t = t.Add(time.Minute)
			continue
		}
		if s.hour != allHours {
			// The second occurrence of a wall time repeated by a DST
			// change already fired an hour ago.
			if p := t.Add(-time.Hour); p.Day() == t.Day() && p.Hour() == t.Hour() {
				t = t.Add(time.Minute)
				continue
			}
		}
		return t
	}
	return time.Time{}
}

func (s *Schedule) dayMatches(t time.Time) bool {
	dom := s.dom&(1<<uint(t.Day())) != 0
	dow := s.dow&(1<<uint(t.Weekday())) != 0
	if s.domStar || s.dowStar {
		return dom && dow
	}
	return dom || dow
}

// firstOccurrence returns the earlier instant when t's wall time occurs
// twice (a daylight-saving change back): time.Date may pick either.
func firstOccurrence(t time.Time) time.Time {
	if p := t.Add(-time.Hour); p.Day() == t.Day() && p.Hour() == t.Hour() && p.Minute() == t.Minute() {
		return p
	}
	return t
}
