// Package metrics exports a fleet's task metrics to Prometheus.
//
// A Metrics is a worker.Observer: put it in worker.Config.Observers and it
// counts every attempt the worker starts and ends, per queue and kind, and
// times the handlers and the wait before them. Given an inspect.Inspector,
// it also exports each queue's depth (waiting, running, scheduled, ...),
// pause flag and fleet-wide processed and failed totals, from a snapshot it
// refreshes in the background: a scrape answers from memory and never
// waits on Redis.
//
//	reg := prometheus.NewRegistry()
//	m, err := metrics.New(metrics.Opts{Registerer: reg, Inspector: inspect.New(rdb)})
//	if err != nil { ... }
//	defer m.Close()
//	w, err := worker.New(ctx, rdb, &worker.Config{Queues: ..., Observers: []worker.Observer{m}})
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// The metrics, their types and labels are listed in the README ("Metrics").
// Counters of task events are this process' own (sum them over the fleet's
// workers in PromQL); the queue gauges and the async_queue_processed_total
// and async_queue_failed_total counters are fleet-wide, read from Redis, so
// every process that exports them reports the same values (query one, or
// use max by (queue)).
//
// A sharded queue (client.Client.DeclareShards) is one queue in every
// series: the queue label is its name, never a shard's, and its queue
// gauges are the sums over its shards. The snapshot adds, per shard,
// async_queue_shard_tasks{queue, shard, state} and
// async_queue_shard_processed_total{queue, shard} (Opts.NoShardSeries
// turns them off).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/worker"
)

// DefaultRefresh is the snapshot period when Opts.Refresh is 0.
const DefaultRefresh = 5 * time.Second

// minRefreshTimeout is the least time one background refresh is given
// before it is abandoned (and counted as an error): Opts.Refresh when
// longer.
const minRefreshTimeout = 5 * time.Second

// DefaultDurationBuckets are the buckets of async_task_duration_seconds
// when Opts.DurationBuckets is nil: 1 ms to 15 minutes.
var DefaultDurationBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900}

// DefaultQueuedBuckets are the buckets of async_task_queued_seconds when
// Opts.QueuedBuckets is nil: 0.5 ms to 10 minutes.
var DefaultQueuedBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 600}

// Opts configures New.
type Opts struct {
	// Registerer receives every metric (required): a prometheus.Registry,
	// or prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// Inspector, when set, is read in the background for the queue gauges
	// (async_queue_*). Without it only the worker's event metrics are
	// exported.
	Inspector *inspect.Inspector
	// Refresh is how often the queue snapshot is read from Redis
	// (Inspector.Queues: one SMEMBERS, then one pipeline per queue), at most.
	// Defaults to DefaultRefresh; it must not be negative.
	Refresh time.Duration
	// NoShardSeries leaves out the per-shard series of sharded queues
	// (async_queue_shard_tasks, async_queue_shard_processed_total): 7
	// series per shard, which a fleet with queues of hundreds of shards
	// may not want. The per-queue series, summed over the shards, stay.
	// Defaults to false: the per-shard series are exported.
	NoShardSeries bool
	// DurationBuckets and QueuedBuckets are the upper bounds, in seconds,
	// of the histograms' buckets, strictly increasing. nil means
	// DefaultDurationBuckets and DefaultQueuedBuckets.
	DurationBuckets, QueuedBuckets []float64
}

// The outcomes of async_tasks_total: the ends of an attempt that a worker
// records.
var outcomes = [...]string{"succeeded", "retried", "dead", "cancelled"}

const (
	outSucceeded = iota
	outRetried
	outDead
	outCancelled
)

// The states of async_queue_tasks, in QueueInfo's order.
var states = [...]string{"waiting", "running", "scheduled", "retrying", "held", "dead"}

// Metrics holds the collectors New registered. Observe is safe for
// concurrent use; Close stops the snapshot.
type Metrics struct {
	started, failed, leaseLost, throttled, parked *prometheus.CounterVec
	ended                                         *prometheus.CounterVec
	duration, queued                              *prometheus.HistogramVec

	// series maps (queue, kind) to its children: read with one atomic
	// load and a map lookup on every event, copied under mu when a new
	// pair shows up.
	series atomic.Pointer[map[seriesKey]*series]
	mu     sync.Mutex

	// The snapshot (only with an Inspector).
	in            *inspect.Inspector
	shardSeries   bool
	refresh       time.Duration
	snap          atomic.Pointer[snapshot]
	refreshErrors prometheus.Counter
	refreshMu     sync.Mutex // one refresh at a time, so an older one never replaces a newer
	stop          context.CancelFunc
	done          chan struct{}
	closeOnce     sync.Once
}

type seriesKey struct{ queue, kind string }

// series is the children of every per-(queue, kind) metric.
type series struct {
	started, failed, leaseLost, throttled, parked prometheus.Counter
	ended                                         [len(outcomes)]prometheus.Counter
	duration, queued                              prometheus.Observer
}

// snapshot is one reading of the inspector.
type snapshot struct {
	at     time.Time // local clock, when the reading ended
	queues []inspect.QueueInfo
}

// New makes the metrics and registers them on opts.Registerer. It fails,
// registering nothing, for a nil Registerer, a negative Refresh, buckets
// that do not increase, or a metric already registered there (a second
// Metrics on one registry). With an Inspector it starts the snapshot's
// goroutine (the first reading at once); Close stops it. New does no I/O
// itself.
func New(opts Opts) (*Metrics, error) {
	if opts.Registerer == nil {
		return nil, errors.New("metrics: Opts.Registerer is nil")
	}
	if opts.Refresh < 0 {
		return nil, fmt.Errorf("metrics: Opts.Refresh %v is negative", opts.Refresh)
	}
	if opts.Refresh == 0 {
		opts.Refresh = DefaultRefresh
	}
	durB, err := buckets("DurationBuckets", opts.DurationBuckets, DefaultDurationBuckets)
	if err != nil {
		return nil, err
	}
	queB, err := buckets("QueuedBuckets", opts.QueuedBuckets, DefaultQueuedBuckets)
	if err != nil {
		return nil, err
	}
	qk := []string{"queue", "kind"}
	m := &Metrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "async_tasks_started_total",
			Help: "Attempts whose handler this process started, by queue and kind.",
		}, qk),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "async_tasks_total",
			Help: "Attempts this process ended with a recorded outcome: succeeded, retried (failed, will run again), dead (failed, dead-lettered) or cancelled.",
		}, []string{"queue", "kind", "outcome"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "async_tasks_failed_total",
			Help: "Attempts this process ended as failed: retried plus dead.",
		}, qk),
		leaseLost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "async_task_lease_losses_total",
			Help: "Attempts whose lease this process lost; their outcome is recorded by another delivery.",
		}, qk),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "async_task_throttle_waits_total",
			Help: "Times a rate limit refused a task a token here, parking it without running.",
		}, qk),
		parked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "async_task_limit_parks_total",
			Help: "Times a full concurrency limit parked a task here without running it.",
		}, qk),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "async_task_duration_seconds",
			Help:    "Handler run time of the attempts this process ended (succeeded, retried, dead, cancelled).",
			Buckets: durB,
		}, qk),
		queued: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "async_task_queued_seconds",
			Help:    "Time from a task's entry entering its stream (enqueue, due time, retry) to its handler's start here, in Redis time.",
			Buckets: queB,
		}, qk),
		in:          opts.Inspector,
		shardSeries: !opts.NoShardSeries,
		refresh:     opts.Refresh,
	}
	empty := map[seriesKey]*series{}
	m.series.Store(&empty)
	cs := []prometheus.Collector{m.started, m.ended, m.failed, m.leaseLost, m.throttled, m.parked, m.duration, m.queued}
	if m.in != nil {
		m.refreshErrors = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "async_queue_snapshot_errors_total",
			Help: "Readings of the queue snapshot that failed; the gauges keep the last good one.",
		})
		cs = append(cs, m.refreshErrors, snapCollector{m})
	}
	for i, c := range cs {
		if err := opts.Registerer.Register(c); err != nil {
			for _, r := range cs[:i] {
				opts.Registerer.Unregister(r)
			}
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	if m.in != nil {
		ctx, stop := context.WithCancel(context.Background())
		m.stop, m.done = stop, make(chan struct{})
		go m.loop(ctx)
	}
	return m, nil
}

func buckets(name string, b, def []float64) ([]float64, error) {
	if b == nil {
		return def, nil
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("metrics: Opts.%s is empty", name)
	}
	for i, v := range b {
		if math.IsNaN(v) || (i > 0 && v <= b[i-1]) {
			return nil, fmt.Errorf("metrics: Opts.%s must increase strictly: %v", name, b)
		}
	}
	return append([]float64(nil), b...), nil
}

// Observe counts one worker event; it implements worker.Observer. It does
// not allocate once the event's (queue, kind) has been seen. A task of a
// shard of a sharded queue counts under the sharded queue's name: the
// event series have no shard label.
func (m *Metrics) Observe(e worker.Event) {
	queue := e.Task.Queue
	if q, _, ok := keys.ParseShard(queue); ok {
		queue = q
	}
	s := m.of(queue, e.Task.Kind)
	if s == nil {
		return
	}
	switch e.Type {
	case worker.EventStarted:
		s.started.Inc()
		s.queued.Observe(max(e.Queued, 0).Seconds())
	case worker.EventSucceeded:
		s.end(outSucceeded, e.Duration)
	case worker.EventRetried:
		s.end(outRetried, e.Duration)
		s.failed.Inc()
	case worker.EventDead:
		s.end(outDead, e.Duration)
		s.failed.Inc()
	case worker.EventCancelled:
		s.end(outCancelled, e.Duration)
	case worker.EventLeaseLost:
		s.leaseLost.Inc()
	case worker.EventThrottled:
		s.throttled.Inc()
	case worker.EventLimitParked:
		s.parked.Inc()
	}
}

// end counts an outcome and times the handler; an end without a handler
// run (a malformed or poison entry dead-lettered) has no duration.
func (s *series) end(o int, d time.Duration) {
	s.ended[o].Inc()
	if d > 0 {
		s.duration.Observe(d.Seconds())
	}
}

// of returns the children of (queue, kind), made on first use; nil when the
// label values are not valid (not UTF-8), which a worker never sends.
func (m *Metrics) of(queue, kind string) *series {
	k := seriesKey{queue, kind}
	if s, ok := (*m.series.Load())[k]; ok {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.series.Load()
	if s, ok := old[k]; ok {
		return s
	}
	s, err := m.newSeries(queue, kind)
	if err != nil {
		return nil
	}
	next := make(map[seriesKey]*series, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[k] = s
	m.series.Store(&next)
	return s
}

func (m *Metrics) newSeries(queue, kind string) (*series, error) {
	var s series
	var err error
	counter := func(v *prometheus.CounterVec, lv ...string) prometheus.Counter {
		if err != nil {
			return nil
		}
		c, e := v.GetMetricWithLabelValues(lv...)
		err = e
		return c
	}
	observer := func(v *prometheus.HistogramVec) prometheus.Observer {
		if err != nil {
			return nil
		}
		o, e := v.GetMetricWithLabelValues(queue, kind)
		err = e
		return o
	}
	s.started = counter(m.started, queue, kind)
	s.failed = counter(m.failed, queue, kind)
	s.leaseLost = counter(m.leaseLost, queue, kind)
	s.throttled = counter(m.throttled, queue, kind)
	s.parked = counter(m.parked, queue, kind)
	for i, o := range outcomes {
		s.ended[i] = counter(m.ended, queue, kind, o)
	}
	s.duration = observer(m.duration)
	s.queued = observer(m.queued)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// Refresh reads the queue snapshot now (the background goroutine does so
// every Opts.Refresh). On an error the snapshot keeps its last good reading,
// async_queue_snapshot_errors_total counts the failure, and the error is
// returned. Without an Inspector it does nothing and returns an error.
func (m *Metrics) Refresh(ctx context.Context) error {
	if m.in == nil {
		return errors.New("metrics: no Opts.Inspector to refresh from")
	}
	m.refreshMu.Lock()
	defer m.refreshMu.Unlock()
	qs, err := m.in.Queues(ctx)
	if err != nil {
		m.refreshErrors.Inc()
		return fmt.Errorf("metrics: refresh the queue snapshot: %w", err)
	}
	m.snap.Store(&snapshot{at: time.Now(), queues: qs})
	return nil
}

func (m *Metrics) loop(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(m.refresh)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, max(m.refresh, minRefreshTimeout))
		_ = m.Refresh(rctx) // counted; the gauges keep the last reading
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close stops the snapshot's goroutine and waits for it. A reading in
// flight is cancelled, but a socket read ends only at its deadline (the
// reading's, max(Refresh, 5 s), with ContextTimeoutEnabled on the client)
// or the client's ReadTimeout, so Close may wait that long when Redis
// hangs. The metrics stay registered: the event counters keep counting,
// the queue gauges keep the last reading and its age grows. Close is
// idempotent.
func (m *Metrics) Close() {
	if m.stop == nil {
		return
	}
	m.closeOnce.Do(func() {
		m.stop()
		<-m.done
	})
}

// snapCollector exports the snapshot: every scrape reads the last reading
// from memory.
type snapCollector struct{ m *Metrics }

var (
	descTasks = prometheus.NewDesc("async_queue_tasks",
		"Tasks of a queue in a state (waiting, running, scheduled, retrying, held, dead), fleet-wide, from the last snapshot.",
		[]string{"queue", "state"}, nil)
	descPaused = prometheus.NewDesc("async_queue_paused",
		"1 while the queue is paused fleet-wide, else 0, from the last snapshot.",
		[]string{"queue"}, nil)
	descProcessed = prometheus.NewDesc("async_queue_processed_total",
		"Attempts of the queue that succeeded or failed, fleet-wide, as counted in Redis by the completion scripts, from the last snapshot.",
		[]string{"queue"}, nil)
	descFailed = prometheus.NewDesc("async_queue_failed_total",
		"Attempts of the queue that failed (retried or dead), fleet-wide, as counted in Redis, from the last snapshot.",
		[]string{"queue"}, nil)
	descShardTasks = prometheus.NewDesc("async_queue_shard_tasks",
		"Tasks of one physical queue of a sharded queue in a state, fleet-wide, from the last snapshot: shard is its index, or \"plain\" for the queue's plain queue. async_queue_tasks of the queue is their sum.",
		[]string{"queue", "shard", "state"}, nil)
	descShardProcessed = prometheus.NewDesc("async_queue_shard_processed_total",
		"Attempts of one physical queue of a sharded queue that succeeded or failed, fleet-wide, as counted in Redis, from the last snapshot.",
		[]string{"queue", "shard"}, nil)
	descAge = prometheus.NewDesc("async_queue_snapshot_age_seconds",
		"Seconds since the queue snapshot was last read from Redis; +Inf before the first reading.",
		nil, nil)
)

func (c snapCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTasks, descPaused, descProcessed, descFailed, descAge} {
		ch <- d
	}
	if c.m.shardSeries {
		ch <- descShardTasks
		ch <- descShardProcessed
	}
}

func (c snapCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.m.snap.Load()
	if s == nil {
		ch <- prometheus.MustNewConstMetric(descAge, prometheus.GaugeValue, math.Inf(1))
		return
	}
	ch <- prometheus.MustNewConstMetric(descAge, prometheus.GaugeValue, time.Since(s.at).Seconds())
	for _, q := range s.queues {
		if q.Error != "" {
			continue // its counts are unknown, not zero
		}
		for i, n := range [len(states)]int64{q.Waiting, q.Running, q.Scheduled, q.Retrying, q.Held, q.Dead} {
			ch <- prometheus.MustNewConstMetric(descTasks, prometheus.GaugeValue, float64(n), q.Queue, states[i])
		}
		paused := 0.0
		if q.Paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(descPaused, prometheus.GaugeValue, paused, q.Queue)
		ch <- prometheus.MustNewConstMetric(descProcessed, prometheus.CounterValue, float64(q.Processed), q.Queue)
		ch <- prometheus.MustNewConstMetric(descFailed, prometheus.CounterValue, float64(q.Failed), q.Queue)
		if !c.m.shardSeries {
			continue
		}
		for _, sh := range q.Shards {
			if sh.Error != "" {
				continue
			}
			shard := "plain"
			if sh.Index >= 0 {
				shard = strconv.Itoa(sh.Index)
			}
			for i, n := range [len(states)]int64{sh.Waiting, sh.Running, sh.Scheduled, sh.Retrying, sh.Held, sh.Dead} {
				ch <- prometheus.MustNewConstMetric(descShardTasks, prometheus.GaugeValue, float64(n), q.Queue, shard, states[i])
			}
			ch <- prometheus.MustNewConstMetric(descShardProcessed, prometheus.CounterValue, float64(sh.Processed), q.Queue, shard)
		}
	}
}
