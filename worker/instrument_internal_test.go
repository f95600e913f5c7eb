package worker

import (
	"context"
	"testing"
	"time"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
)

// BenchmarkAttemptInstrumentationOff is what each attempt pays for events,
// per-task lines and the consumer span when none is taken: no observer,
// the default logger (info), the global tracer with no SDK.
func BenchmarkAttemptInstrumentationOff(b *testing.B) {
	c := (&Config{}).withDefaults()
	w := &Worker{cfg: c, log: c.Logger.With("worker", "w"), tracers: engine.NewTracers(nil)}
	j := &job{q: &queue{keys: keys.ForQueue("q")}, entry: "1700000000000-0", key: "1700000000000-0", dlv: 1,
		env: &codec.Envelope{Kind: "k", Attempt: 1, MaxAttempts: 3}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		w.reportStart(j)
		sctx, span := w.startProcess(ctx, j)
		start := time.Now()
		_ = sctx
		took := time.Since(start)
		endProcess(span, nil)
		w.report(j, EventSucceeded, took, 0, nil)
	}
}
