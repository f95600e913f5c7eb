package cron

import (
	"strings"
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	zone := func(name string) *time.Location {
		loc, err := time.LoadLocation(name)
		if err != nil {
			t.Fatal(err)
		}
		return loc
	}
	ny, berlin, london, sydney := zone("America/New_York"), zone("Europe/Berlin"), zone("Europe/London"), zone("Australia/Sydney")
	utc := func(s string) time.Time {
		v, err := time.Parse("2006-01-02 15:04", s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct {
		expr       string
		loc        *time.Location
		after, nxt string // UTC
	}{
		{"* * * * *", nil, "2026-01-01 10:00", "2026-01-01 10:01"},
		{"*/15 * * * *", nil, "2026-01-01 10:07", "2026-01-01 10:15"},
		{"0 9 * * MON-FRI", nil, "2026-11-27 09:00", "2026-11-30 09:00"}, // Friday 9:00 → Monday
		{"30 2 1 * *", nil, "2026-01-31 00:00", "2026-02-01 02:30"},
		{"0 0 29 2 *", nil, "2026-03-01 00:00", "2028-02-29 00:00"},
		{"0 12 13 * 5", nil, "2026-11-01 00:00", "2026-11-06 12:00"},   // Friday or the 13th
		{"0 0 */2 * MON", nil, "2026-11-01 00:00", "2026-11-09 00:00"}, // odd-dated Mondays (Vixie: a starred field ANDs)
		{"0 0 * * MON", nil, "2026-11-01 00:00", "2026-11-02 00:00"},
		{"0 0 * * 7", nil, "2026-11-26 00:00", "2026-11-29 00:00"}, // 7 is Sunday
		{"5/20 * * * *", nil, "2026-01-01 10:26", "2026-01-01 10:45"},
		{"@hourly", nil, "2026-01-01 10:26", "2026-01-01 11:00"},
		{"@weekly", nil, "2026-11-26 00:00", "2026-11-29 00:00"},
		{"0 9 * * *", ny, "2026-11-26 00:00", "2026-11-26 14:00"},  // EST
		{"0 9 * * *", ny, "2026-07-01 00:00", "2026-07-01 13:00"},  // EDT
		{"30 1 * * *", ny, "2026-11-01 05:30", "2026-11-02 06:30"}, // 1:30 EDT fired; 1:30 EST does not
		{"30 * * * *", ny, "2026-11-01 05:30", "2026-11-01 06:30"}, // every hour: both
		// The repeated hour when clocks go back fires once, at its first
		// occurrence, west and east of UTC.
		{"0 2 * * *", berlin, "2026-10-24 12:00", "2026-10-25 00:00"},  // 02:00 CEST
		{"0 2 * * *", berlin, "2026-10-25 00:00", "2026-10-26 01:00"},  // not 02:00 CET too
		{"30 1 * * *", london, "2026-10-24 12:00", "2026-10-25 00:30"}, // 01:30 BST
		{"30 2 * * *", sydney, "2026-04-04 00:00", "2026-04-04 15:30"}, // 02:30 AEDT
		{"30 2 * * *", sydney, "2026-04-04 15:30", "2026-04-05 16:30"}, // next day, AEST
		{"30 2 * * *", ny, "2026-03-08 05:00", "2026-03-09 06:30"},     // 2:30 does not exist on the 8th: skipped
	} {
		s, err := Parse(c.expr, c.loc)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.expr, err)
			continue
		}
		if got := s.Next(utc(c.after)).UTC(); !got.Equal(utc(c.nxt)) {
			t.Errorf("%q after %s: got %s, want %s", c.expr, c.after, got.Format("2006-01-02 15:04"), c.nxt)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for expr, want := range map[string]string{
		"* * * *":     "4 fields",
		"60 * * * *":  "minute 60: out of range",
		"* 24 * * *":  "hour 24",
		"* * 0 * *":   "day of month 0",
		"* * * 13 *":  "month 13",
		"* * * FOO *": `month "FOO"`,
		"*/0 * * * *": "step",
		"5-1 * * * *": "backwards",
		"0 0 30 2 *":  "never fires",
		"@every 5m":   "unknown descriptor",
		"* * * * 8":   "day of week 8",
		"1,x * * * *": `minute "x"`,
	} {
		_, err := Parse(expr, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", expr, err, want)
		}
	}
}
