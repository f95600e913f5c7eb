package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/dashboard"
)

// Progress in task show and group -watch. The units a handler
// reports are its own; the shipped handler (upload) reports bytes, so the
// text shows them as bytes, and -json gives the numbers as reported.

// fmtBytes prints n bytes in binary units as the dashboard does: "512 B",
// "12.3 MiB", "200 MiB".
func fmtBytes(n int64) string { return dashboard.HumanBytes(n) }

// fmtWork prints done of total: "12.3 MiB of 200 MiB (6%)", or
// "12.3 MiB (total not known yet)".
func fmtWork(done, total int64) string {
	if total <= 0 {
		return fmtBytes(done) + " (total not known yet)"
	}
	p := inspect.Progress{Done: done, Total: total}
	return fmt.Sprintf("%s of %s (%d%%)", fmtBytes(done), fmtBytes(total), p.Percent())
}

// fmtProgress prints a task's progress for task show: "12.3 MiB of 200
// MiB (6%), attempt 2, 1s ago" (how long ago by this machine's clock).
func fmtProgress(p inspect.Progress, now time.Time) string {
	ago := now.Sub(p.Updated).Round(time.Second)
	when := ago.String() + " ago"
	if ago < 0 {
		when = "just now" // the clocks differ by more than the age
	}
	return fmt.Sprintf("%s, attempt %d, %s", fmtWork(p.Done, p.Total), p.Attempt, when)
}

// progressField reads task show's "progress" back from its JSON form.
func progressField(v any) (inspect.Progress, bool) {
	b, err := json.Marshal(v)
	if err != nil {
		return inspect.Progress{}, false
	}
	var p inspect.Progress
	if err := json.Unmarshal(b, &p); err != nil || p.Updated.IsZero() {
		return inspect.Progress{}, false
	}
	return p, true
}
