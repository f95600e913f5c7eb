package conformance

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/ratelimit"
)

// bw is the bandwidth table's rate: 1 byte a second, in bursts of up to
// 1000 bytes. The probe counts in chunks of 100 bytes, which a run does not
// refill (it would take 100 s).
var bw = ratelimit.Bandwidth{BytesPerSecond: 1, Burst: 1000}

func bandwidthRows() []Row {
	bkey := func(r *Run) string { return "bw-key:" + r.U }
	// probe notes what the key's bucket holds now, on the Redis itself:
	// how many 100-byte chunks it admits, and when the next would be due
	// (to the minute: a bucket in debt shows how deep).
	probe := func(r *Run) {
		b := ratelimit.NewBandwidth(r.Env.RDB, bw)
		n := 0
		var after time.Duration
		for ; n <= 10; n++ {
			ok, d, err := b.Allow(r.Ctx, bkey(r), 100)
			r.Must(err)
			if !ok {
				after = d
				break
			}
		}
		r.Note("bandwidth %s admits %d chunks now, the next due in %v", bkey(r), n, after.Round(time.Minute))
	}
	take := func(n int64) func(r *Run) {
		return func(r *Run) {
			ok, _, err := ratelimit.NewBandwidth(r.RDB, bw).Allow(r.Ctx, bkey(r), n)
			r.Must(err)
			if !ok {
				r.T.Fatal("setup: not allowed")
			}
		}
	}
	allow := func(r *Run) string {
		ok, d, err := ratelimit.NewBandwidth(r.RDB, bw).Allow(r.Ctx, bkey(r), 100)
		probe(r)
		return Answer(fmt.Sprintf("ok=%v retry-after=%v", ok, d.Round(time.Minute)), err)
	}
	return []Row{
		{Name: "Bandwidth.Wait", Setup: take(300), Op: func(r *Run) string {
			err := ratelimit.NewBandwidth(r.RDB, bw).Wait(r.Ctx, bkey(r), 200)
			probe(r)
			return Answer("", err)
		}},
		{Name: "Bandwidth.Wait/steps", Op: func(r *Run) string {
			// 1000 bytes go at once; the next 500 are due in 500 s: the
			// wait is cut short here and the second step given back.
			ctx, cancel := context.WithTimeout(r.Ctx, 2*time.Second)
			defer cancel()
			err := ratelimit.NewBandwidth(r.RDB, bw).Wait(ctx, bkey(r), 1500)
			probe(r)
			return Answer("", err)
		}},
		{Name: "Bandwidth.Allow", Setup: take(300), Op: allow},
		{Name: "Bandwidth.Allow/refused", Setup: take(1000), Op: allow},
		{Name: "Bandwidth.Reader", Op: func(r *Run) string {
			n, err := io.Copy(io.Discard, ratelimit.NewBandwidth(r.RDB, bw).Reader(r.Ctx, bkey(r), strings.NewReader(strings.Repeat("x", 250))))
			probe(r)
			return Answer(n, err)
		}},
	}
}

// TestResendConformanceBandwidth is the resend table of the bandwidth
// limiter (ratelimit.BandwidthLimiter): its calls on the Limiter's script
// with their replies dropped once and twice.
func TestResendConformanceBandwidth(t *testing.T) {
	RunTable(t, bandwidthRows())
}
