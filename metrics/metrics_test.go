package metrics_test

import (
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/taskfleet/async/metrics"
	"github.com/taskfleet/async/worker"
)

// newMetrics returns a Metrics on a registry of its own, closed at the end
// of t.
func newMetrics(t testing.TB, opts metrics.Opts) (*metrics.Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	m, err := metrics.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m, reg
}

func ev(typ worker.EventType, queue, kind string) worker.Event {
	return worker.Event{Type: typ, Task: worker.Task{ID: queue + "/1", Queue: queue, Kind: kind, Attempt: 1, MaxAttempts: 3}}
}

// Each event type moves its own series, of its own (queue, kind), and no
// other.
func TestObserveCountsEachEvent(t *testing.T) {
	m, reg := newMetrics(t, metrics.Opts{})
	var o worker.Observer = m // the contract

	start := ev(worker.EventStarted, "mail", "send")
	start.Queued = 250 * time.Millisecond
	for range 7 {
		o.Observe(start)
	}
	for _, c := range []struct {
		typ worker.EventType
		n   int
		d   time.Duration
	}{
		{worker.EventSucceeded, 3, 100 * time.Millisecond},
		{worker.EventRetried, 2, 200 * time.Millisecond},
		{worker.EventDead, 1, 300 * time.Millisecond},
		{worker.EventCancelled, 1, 400 * time.Millisecond},
		{worker.EventLeaseLost, 4, 0},
		{worker.EventThrottled, 5, 0},
		{worker.EventLimitParked, 6, 0},
	} {
		for range c.n {
			e := ev(c.typ, "mail", "send")
			e.Duration = c.d
			e.Delay = time.Second
			o.Observe(e)
		}
	}
	// A dead-lettering without a handler run (a malformed entry): counted,
	// not timed.
	o.Observe(ev(worker.EventDead, "mail", "send"))
	// Another kind of the same queue.
	o.Observe(ev(worker.EventStarted, "mail", "digest"))

	ql := []string{"queue", "mail", "kind", "send"}
	want := map[string]float64{
		"async_tasks_started_total":       7,
		"async_tasks_failed_total":        2 + 2,
		"async_task_lease_losses_total":   4,
		"async_task_throttle_waits_total": 5,
		"async_task_limit_parks_total":    6,
	}
	for name, w := range want {
		if got := value(t, reg, name, ql...); got != w {
			t.Errorf("%s = %v, want %v", name, got, w)
		}
	}
	for outcome, w := range map[string]float64{"succeeded": 3, "retried": 2, "dead": 2, "cancelled": 1} {
		if got := value(t, reg, "async_tasks_total", append(ql, "outcome", outcome)...); got != w {
			t.Errorf("async_tasks_total{outcome=%q} = %v, want %v", outcome, got, w)
		}
	}
	n, sum := histogram(t, reg, "async_task_duration_seconds", ql...)
	if wantSum := 3*0.1 + 2*0.2 + 0.3 + 0.4; n != 7 || math.Abs(sum-wantSum) > 1e-9 {
		t.Errorf("async_task_duration_seconds: count %d sum %v, want 7 and %v", n, sum, wantSum)
	}
	n, sum = histogram(t, reg, "async_task_queued_seconds", ql...)
	if n != 7 || math.Abs(sum-7*0.25) > 1e-9 {
		t.Errorf("async_task_queued_seconds: count %d sum %v, want 7 and %v", n, sum, 7*0.25)
	}
	if got := value(t, reg, "async_tasks_started_total", "queue", "mail", "kind", "digest"); got != 1 {
		t.Errorf("started of kind digest = %v, want 1", got)
	}
	if got := value(t, reg, "async_tasks_total", "queue", "mail", "kind", "digest", "outcome", "succeeded"); got != 0 {
		t.Errorf("succeeded of kind digest = %v, want 0 (its series exported from its first event)", got)
	}
	// Without an Inspector there is no queue gauge.
	if _, ok := find(t, reg, "async_queue_snapshot_age_seconds"); ok {
		t.Error("async_queue_snapshot_age_seconds exported without an Inspector")
	}
}

// Observe is called from every handler goroutine at once; under -race this
// also checks the series cache.
func TestObserveConcurrent(t *testing.T) {
	m, reg := newMetrics(t, metrics.Opts{})
	const goroutines, per = 8, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range per {
				kind := []string{"a", "b", "c"}[(g+i)%3]
				m.Observe(ev(worker.EventStarted, "q", kind))
				m.Observe(ev(worker.EventSucceeded, "q", kind))
			}
		})
	}
	wg.Wait()
	var started, ok float64
	for _, k := range []string{"a", "b", "c"} {
		started += value(t, reg, "async_tasks_started_total", "queue", "q", "kind", k)
		ok += value(t, reg, "async_tasks_total", "queue", "q", "kind", k, "outcome", "succeeded")
	}
	if started != goroutines*per || ok != goroutines*per {
		t.Fatalf("started %v, succeeded %v, want %d each", started, ok, goroutines*per)
	}
}

// Once a (queue, kind) has been seen, an event costs no allocation.
func TestObserveDoesNotAllocate(t *testing.T) {
	m, _ := newMetrics(t, metrics.Opts{})
	for _, typ := range []worker.EventType{worker.EventStarted, worker.EventSucceeded, worker.EventRetried,
		worker.EventDead, worker.EventCancelled, worker.EventLeaseLost, worker.EventThrottled, worker.EventLimitParked} {
		e := ev(typ, "q", "k")
		e.Queued, e.Duration = time.Millisecond, time.Millisecond
		var o worker.Observer = m
		o.Observe(e)
		if a := testing.AllocsPerRun(1000, func() { o.Observe(e) }); a != 0 {
			t.Errorf("Observe(%s): %v allocations per call, want 0", typ, a)
		}
	}
}

func TestNewRefusesBadOpts(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, c := range []struct {
		name string
		opts metrics.Opts
		want string
	}{
		{"nil registerer", metrics.Opts{}, "Registerer is nil"},
		{"negative refresh", metrics.Opts{Registerer: reg, Refresh: -time.Second}, "negative"},
		{"buckets not increasing", metrics.Opts{Registerer: reg, DurationBuckets: []float64{1, 1}}, "DurationBuckets must increase"},
		{"buckets empty", metrics.Opts{Registerer: reg, QueuedBuckets: []float64{}}, "QueuedBuckets is empty"},
		{"buckets NaN", metrics.Opts{Registerer: reg, QueuedBuckets: []float64{math.NaN()}}, "QueuedBuckets must increase"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := metrics.New(c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: %v, %v; want an error with %q", m, err, c.want)
			}
		})
	}
	// Nothing was registered by the refused calls.
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 0 {
		t.Fatalf("registry after refused New calls: %d families, %v; want none", len(mfs), err)
	}
}

// A second Metrics on one registry is refused, and a refused New leaves
// nothing of itself registered.
func TestNewCollision(t *testing.T) {
	m, reg := newMetrics(t, metrics.Opts{})
	if _, err := metrics.New(metrics.Opts{Registerer: reg}); !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
		t.Fatalf("second New on one registry: %v, want an AlreadyRegisteredError", err)
	}
	// The first still counts.
	m.Observe(ev(worker.EventStarted, "q", "k"))
	if got := value(t, reg, "async_tasks_started_total", "queue", "q", "kind", "k"); got != 1 {
		t.Fatalf("started = %v after the refused New, want 1", got)
	}

	// A registerer that refuses the last collector: New unregisters every
	// one it registered before.
	rr := &refusing{Registry: prometheus.NewRegistry(), refuse: "async_task_queued_seconds"}
	if _, err := metrics.New(metrics.Opts{Registerer: rr}); !errors.Is(err, errRefused) {
		t.Fatalf("New on a registerer refusing async_task_queued_seconds: %v, want errRefused", err)
	}
	if rr.registered == 0 || rr.unregistered != rr.registered {
		t.Fatalf("New registered %d collectors and unregistered %d after the refusal, want all of them", rr.registered, rr.unregistered)
	}
	if mfs, err := rr.Gather(); err != nil || len(mfs) != 0 {
		t.Fatalf("registry after the refused New: %d families, %v; want none", len(mfs), err)
	}
}

var errRefused = errors.New("refused")

// refusing is a registry that refuses the collector describing the metric
// refuse, and counts the others registered and unregistered.
type refusing struct {
	*prometheus.Registry
	refuse                   string
	registered, unregistered int
}

func (r *refusing) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	c.Describe(ch)
	close(ch)
	for d := range ch {
		if strings.Contains(d.String(), `"`+r.refuse+`"`) {
			return errRefused
		}
	}
	if err := r.Registry.Register(c); err != nil {
		return err
	}
	r.registered++
	return nil
}

func (r *refusing) Unregister(c prometheus.Collector) bool {
	if r.Registry.Unregister(c) {
		r.unregistered++
		return true
	}
	return false
}

// The exposition passes the registry's own lint (names, help, units).
func TestLint(t *testing.T) {
	m, reg := newMetrics(t, metrics.Opts{})
	for _, typ := range []worker.EventType{worker.EventStarted, worker.EventSucceeded, worker.EventRetried,
		worker.EventDead, worker.EventCancelled, worker.EventLeaseLost, worker.EventThrottled, worker.EventLimitParked} {
		m.Observe(ev(typ, "q", "k"))
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
