package metrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskfleet/async/metrics"
	"github.com/taskfleet/async/worker"
)

// benchEvents is one attempt's events (started, then succeeded) over
// kinds kinds of one queue.
func benchEvents(kinds int) []worker.Event {
	var out []worker.Event
	for k := range kinds {
		kind := string(rune('a' + k))
		s := ev(worker.EventStarted, "bench", kind)
		s.Queued = 3 * time.Millisecond
		d := ev(worker.EventSucceeded, "bench", kind)
		d.Duration = 20 * time.Millisecond
		out = append(out, s, d)
	}
	return out
}

// BenchmarkObserve is one event on the worker's hot path, through the
// worker.Observer interface as the worker calls it.
func BenchmarkObserve(b *testing.B) {
	m, err := metrics.New(metrics.Opts{Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	var o worker.Observer = m
	evs := benchEvents(8)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		o.Observe(evs[i%len(evs)])
		i++
	}
}

// BenchmarkObserveParallel is the same from every P at once, as the
// handler goroutines of a busy worker call it.
func BenchmarkObserveParallel(b *testing.B) {
	m, err := metrics.New(metrics.Opts{Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	var o worker.Observer = m
	evs := benchEvents(8)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			o.Observe(evs[i%len(evs)])
			i++
		}
	})
}
