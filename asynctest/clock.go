package asynctest

import "time"

// Now returns Redis' time.
func (f *Fleet) Now() time.Time { panic("asynctest: not yet") }

// Advance moves Redis' clock forward by d (stopping it first, if it ran)
// and runs the coordinator's duties at the new time, so that what fell due
// (delayed tasks, retries, repeat slots) is in its queue when Advance
// returns. It returns the new time. On a real Redis it skips the test.
func (f *Fleet) Advance(d time.Duration) time.Time { panic("asynctest: not yet") }
