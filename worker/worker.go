package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Config configures a Worker. A nil *Config means all defaults.
type Config struct {
	// Queues maps each queue the worker serves to its weight. With several
	// queues, each fetch tries them in an order drawn by weight (a queue of
	// weight 6 comes first six times as often as one of weight 1), or by
	// descending weight when StrictPriority is set. Defaults to
	// {"default": 1}.
	Queues map[string]int

	// StrictPriority makes a lower-weight queue run only while every
	// higher-weight queue is empty. Defaults to false.
	StrictPriority bool

	// Concurrency is how many handlers run at once. Defaults to 100.
	Concurrency int

	// Name is the worker's consumer name in each queue's consumer group. It
	// must be unique among running workers; a stable name (a pod name) lets a
	// restarted worker reuse its consumer. Defaults to
	// "<hostname>-<pid>-<n>", n counting workers in the process.
	Name string

	// Lease is how long a task stays with this worker without a heartbeat
	// before another worker may take it over. Heartbeats every Lease/4 keep
	// it while the handler runs; if none gets through, the handler's ctx is
	// cancelled (cause ErrLeaseLost) Lease/5 before the lease ends, and once
	// it returns its task is handed back to the queue at once (unless
	// another worker took it over meanwhile). Every worker of a queue should
	// use the same value. Defaults to 30s.
	Lease time.Duration

	// MaxDeliveries is how many times one attempt may be delivered (that is,
	// its worker died or lost the lease before recording an outcome) before
	// the task is dead-lettered as poison. Defaults to 10.
	MaxDeliveries int

	// Backoff returns the delay before attempt+1 after attempt failed.
	// Defaults to DefaultBackoff.
	Backoff func(attempt int) time.Duration

	// MaxPayloadBytes bounds a task's payload when it is read; a larger one is
	// dead-lettered with ErrPayloadTooLarge. Defaults to 1 MiB.
	MaxPayloadBytes int

	// FetchBatch is the most entries one read from a stream takes. Defaults
	// to 256.
	FetchBatch int

	// BlockTimeout is how long one blocking read waits for new entries; it
	// bounds how long Stop waits for the fetch loop. Defaults to 1s.
	BlockTimeout time.Duration

	// DeadLetterCap is how many dead tasks each queue keeps; older ones are
	// deleted by housekeeping. Defaults to 100000.
	DeadLetterCap int64

	// HousekeepInterval is how often the worker trims its queues' streams and
	// caps their dead-letter stores. Defaults to 30s.
	HousekeepInterval time.Duration

	// KindLimits caps how many tasks of a kind run at once across the whole
	// fleet: every worker, in every process, that sets a limit for the kind
	// (give them all the same number), e.g. {"transcode": 10}. A task that
	// finds its limit full waits in Redis, not in a worker, and never holds
	// up other tasks; it is woken as a slot frees (in order), or retries
	// after LimitWait. A slot is leased like the task (renewed by the
	// heartbeats): a worker that dies frees it when its lease ends. Defaults
	// to none.
	KindLimits map[string]int

	// QueueLimits caps how many tasks of a queue run at once across the
	// fleet, as KindLimits does for kinds. A task subject to both takes a
	// slot of each. Defaults to none.
	QueueLimits map[string]int

	// LimitWait is how long a task parked by a full limit waits at most
	// before it tries again, should no release wake it (its waker died).
	// Defaults to Lease.
	LimitWait time.Duration

	// RateLimits throttle tasks fleet-wide, by the RateKey they were
	// enqueued with (per key prefix), by queue or by kind: a task takes a
	// token of each bucket that applies before it runs, and one that must
	// wait is parked in Redis until its token is due, holding no worker (no
	// head-of-line blocking, no polling). Give every worker the same
	// limits. Defaults to none.
	RateLimits []RateLimit

	// Logger receives the worker's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

var workerSeq atomic.Int64

// completers is how many goroutines record outcomes, so that one batch is
// encoded while another is in Redis.
const completers = 2

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	if len(out.Queues) == 0 {
		out.Queues = map[string]int{"default": 1}
	}
	if out.Concurrency == 0 {
		out.Concurrency = 100
	}
	if out.Name == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "worker"
		}
		out.Name = fmt.Sprintf("%s-%d-%d", host, os.Getpid(), workerSeq.Add(1))
	}
	if out.Lease == 0 {
		out.Lease = 30 * time.Second
	}
	if out.MaxDeliveries == 0 {
		out.MaxDeliveries = 10
	}
	if out.Backoff == nil {
		out.Backoff = DefaultBackoff
	}
	if out.MaxPayloadBytes == 0 {
		out.MaxPayloadBytes = 1 << 20
	}
	if out.FetchBatch == 0 {
		out.FetchBatch = 256
	}
	if out.BlockTimeout == 0 {
		out.BlockTimeout = time.Second
	}
	if out.DeadLetterCap == 0 {
		out.DeadLetterCap = 100000
	}
	if out.HousekeepInterval == 0 {
		out.HousekeepInterval = 30 * time.Second
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.LimitWait == 0 {
		out.LimitWait = out.Lease
	}
	return out
}

func (c *Config) validate() error {
	for q, wt := range c.Queues {
		if err := keys.ValidateName("queue", q); err != nil {
			return fmt.Errorf("worker: Config.Queues: %w", err)
		}
		if wt < 1 {
			return fmt.Errorf("worker: Config.Queues[%q] has weight %d, must be at least 1", q, wt)
		}
	}
	for _, l := range []struct {
		what string
		m    map[string]int
	}{{"KindLimits", c.KindLimits}, {"QueueLimits", c.QueueLimits}} {
		for name, n := range l.m {
			if err := keys.ValidateName("limited", name); err != nil {
				return fmt.Errorf("worker: Config.%s: %w", l.what, err)
			}
			if n < 1 {
				return fmt.Errorf("worker: Config.%s[%q] is %d, must be at least 1", l.what, name, n)
			}
		}
	}
	if err := validateRates(c.RateLimits); err != nil {
		return err
	}
	if c.LimitWait < time.Millisecond {
		return fmt.Errorf("worker: Config.LimitWait is %v, must be at least 1ms", c.LimitWait)
	}
	if err := keys.ValidateName("worker", c.Name); err != nil {
		return fmt.Errorf("worker: Config.Name: %w", err)
	}
	switch {
	case c.Concurrency < 1:
		return fmt.Errorf("worker: Config.Concurrency is %d, must be at least 1", c.Concurrency)
	case c.Lease < 50*time.Millisecond:
		return fmt.Errorf("worker: Config.Lease is %v, must be at least 50ms", c.Lease)
	case c.MaxDeliveries < 1:
		return fmt.Errorf("worker: Config.MaxDeliveries is %d, must be at least 1", c.MaxDeliveries)
	case c.MaxPayloadBytes < 1:
		return fmt.Errorf("worker: Config.MaxPayloadBytes is %d, must be positive", c.MaxPayloadBytes)
	case c.FetchBatch < 1:
		return fmt.Errorf("worker: Config.FetchBatch is %d, must be at least 1", c.FetchBatch)
	case c.BlockTimeout < time.Millisecond:
		return fmt.Errorf("worker: Config.BlockTimeout is %v, must be at least 1ms", c.BlockTimeout)
	case c.DeadLetterCap < 1:
		return fmt.Errorf("worker: Config.DeadLetterCap is %d, must be at least 1", c.DeadLetterCap)
	case c.HousekeepInterval < time.Millisecond:
		return fmt.Errorf("worker: Config.HousekeepInterval is %v, must be at least 1ms", c.HousekeepInterval)
	}
	return nil
}

// DefaultBackoff waits 1s after the first failed attempt and doubles with
// each further one, each delay drawn at random within ±25%, never over an
// hour.
func DefaultBackoff(attempt int) time.Duration {
	d := time.Second << min(max(attempt-1, 0), 12)
	d = time.Duration(float64(d) * (0.75 + rand.Float64()/2))
	return min(d, time.Hour)
}

const (
	stateNew = iota
	stateRunning
	stateStopped
)

// Worker runs handlers for the tasks of its queues. Many workers, in one
// process or many, share each queue through its consumer group.
type Worker struct {
	rdb redis.UniversalClient
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	state    int
	handlers map[string]handlerFunc

	queues  []*queue
	byName  map[string]*queue
	limits  map[string]*limiter // by scope ("kind:<kind>", "queue:<queue>")
	rates   *rates
	slots   chan struct{} // one token per running (or about to run) handler
	results chan *outcome

	inflightMu    sync.Mutex
	inflight      map[jobKey]*job
	recentCancels map[jobKey]time.Time // cancel requests for entries not dispatched yet
	ended         map[jobKey]endedRun  // runs that ended here without their entry acked
	crossSlot     atomic.Bool          // the queues' streams live in different cluster slots
	oomLogged     atomic.Int64         // when Redis' OOM refusal was last logged (Unix ns)

	clock   store.Clock    // Redis time, for task deadlines
	started time.Time      // when Start ran: entries delivered since are this run's
	markers time.Duration  // how long a resend-safe call's op marker lives
	eng     *engine.Engine // reads the outcomes continuations and joins ask for
	ctl     *redis.PubSub  // cancel requests for running tasks
	byCtl   map[string]*queue

	loopCancel context.CancelFunc // fetch, reclaim, forward, housekeeping
	loops      sync.WaitGroup
	execs      sync.WaitGroup
	quit       chan struct{} // closed when the completer and heartbeats must end
	fwdWake    chan struct{}
	support    sync.WaitGroup
	stopped    chan struct{}
	stopOnce   sync.Once
	stopErr    error
}

type queue struct {
	keys   keys.Queue
	weight int
	cursor string // XAUTOCLAIM cursor

	drainMu    sync.Mutex // one outbox drain at a time
	drainAgain atomic.Bool
}

type jobKey struct{ queue, entry string }

// New returns a Worker on rdb, which it uses but never closes. Within ctx
// (New sets no time limit of its own: give ctx one) it checks the server (as client.New does: Redis 6.2 or newer, the Lua
// scripts loaded, warnings in the log about the eviction policy and
// ContextTimeoutEnabled). Register handlers with Handle, then call Start.
func New(ctx context.Context, rdb redis.UniversalClient, cfg *Config) (*Worker, error) {
	if rdb == nil {
		return nil, errors.New("worker: redis client is nil")
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	w := &Worker{
		rdb:      rdb,
		cfg:      c,
		log:      c.Logger.With(slog.String("worker", c.Name)),
		handlers: map[string]handlerFunc{},
		byName:   map[string]*queue{},
		inflight: map[jobKey]*job{},

		recentCancels: map[jobKey]time.Time{},
		ended:         map[jobKey]endedRun{},
		markers:       store.MarkerTTL(rdb),
		stopped:       make(chan struct{}),
		quit:          make(chan struct{}),
		fwdWake:       make(chan struct{}, 1),
	}
	w.initLimits()
	w.initRates()
	names := make([]string, 0, len(c.Queues))
	for q := range c.Queues {
		names = append(names, q)
	}
	sort.Slice(names, func(i, j int) bool {
		if c.Queues[names[i]] != c.Queues[names[j]] {
			return c.Queues[names[i]] > c.Queues[names[j]]
		}
		return names[i] < names[j]
	})
	for _, n := range names {
		q := &queue{keys: keys.ForQueue(n), weight: c.Queues[n], cursor: "0-0"}
		w.queues = append(w.queues, q)
		w.byName[n] = q
	}
	w.byCtl = map[string]*queue{}
	for _, q := range w.queues {
		w.byCtl[q.keys.Ctl()] = q
	}
	eng, err := engine.New(ctx, rdb, engine.Config{Logger: c.Logger})
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if on, known := store.ContextDeadlines(rdb); known && !on {
		// Leases stay safe (a handler is cancelled once no heartbeat got
		// through in time, whatever a call does), but one dead pooled
		// connection holds a heartbeat or an outcome for the read timeout.
		w.log.Warn("the redis client has ContextTimeoutEnabled off: a call on a dead connection waits out ReadTimeout instead of the worker's deadline; set ContextTimeoutEnabled: true in its options")
	}
	w.eng = eng
	return w, nil
}

// Name returns the worker's consumer name.
func (w *Worker) Name() string { return w.cfg.Name }

// Start creates missing consumer groups and starts the worker's loops; it
// returns once they run. Calling it again is a no-op; after Stop it fails.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch w.state {
	case stateRunning:
		return nil
	case stateStopped:
		return errors.New("worker: Start after Stop")
	}
	if len(w.handlers) == 0 {
		return errors.New("worker: no handlers registered; call worker.Handle before Start")
	}
	for _, q := range w.queues {
		if err := store.EnsureGroup(ctx, w.rdb, q.keys); err != nil {
			return fmt.Errorf("worker: %w", err)
		}
	}
	if err := w.clock.Sync(ctx, w.rdb); err != nil {
		return fmt.Errorf("worker: read redis time: %w", err)
	}
	chans := make([]string, 0, len(w.queues))
	for _, q := range w.queues {
		chans = append(chans, q.keys.Ctl())
	}
	w.ctl = w.rdb.Subscribe(ctx, chans...)
	for range chans {
		// Wait for every confirmation: a cancel request sent after Start
		// returned reaches this worker.
		if _, err := w.ctl.ReceiveTimeout(ctx, 10*time.Second); err != nil {
			_ = w.ctl.Close()
			return fmt.Errorf("worker: subscribe to control channels: %w", err)
		}
	}
	w.started = time.Now()
	w.slots = make(chan struct{}, w.cfg.Concurrency)
	for i := 0; i < w.cfg.Concurrency; i++ {
		w.slots <- struct{}{}
	}
	w.results = make(chan *outcome, w.cfg.Concurrency)
	lctx, cancel := context.WithCancel(context.Background())
	w.loopCancel = cancel

	w.support.Add(3 + completers)
	for i := 0; i < completers; i++ {
		go w.completeLoop()
	}
	go w.heartbeatLoop()
	go w.watchdogLoop()
	go w.controlLoop()
	w.loops.Add(3)
	go w.fetchLoop(lctx)
	go w.forwardLoop(lctx)
	go w.housekeepLoop(lctx)
	w.state = stateRunning
	w.log.Debug("worker started", slog.Int("concurrency", w.cfg.Concurrency))
	return nil
}

// Stopped returns a channel closed once Stop or StopAndCancel finished.
func (w *Worker) Stopped() <-chan struct{} { return w.stopped }

// Stop stops fetching, lets running handlers finish, and returns when they
// did. If ctx ends first, the handlers still running are cancelled (cause
// ErrShutdown) and their tasks handed back to their queues at once, so they
// do not wait for their leases to end; Stop then returns ctx.Err(). Stop is
// idempotent; before Start it only marks the worker stopped.
func (w *Worker) Stop(ctx context.Context) error {
	return w.stop(ctx, false)
}

// StopAndCancel is Stop that cancels running handlers (cause ErrShutdown) at
// once. Their tasks are handed back to their queues, not failed.
func (w *Worker) StopAndCancel(ctx context.Context) error {
	return w.stop(ctx, true)
}

func (w *Worker) stop(ctx context.Context, cancelNow bool) error {
	w.mu.Lock()
	st := w.state
	w.state = stateStopped
	w.mu.Unlock()
	if st != stateRunning {
		if st == stateNew {
			w.stopOnce.Do(func() {
				w.eng.Close()
				close(w.stopped)
			})
		}
		select {
		case <-w.stopped:
			return w.stopErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	w.stopOnce.Do(func() {
		w.stopErr = w.shutdown(ctx, cancelNow)
		close(w.stopped)
	})
	return w.stopErr
}

func (w *Worker) shutdown(ctx context.Context, cancelNow bool) error {
	w.loopCancel()
	if cancelNow {
		w.cancelAll(ErrShutdown)
	}
	w.loops.Wait()
	execsDone := make(chan struct{})
	go func() { w.execs.Wait(); close(execsDone) }()
	var err error
	select {
	case <-execsDone:
		// Every handler returned and queued its outcome; the completer
		// records them before it ends.
	case <-ctx.Done():
		err = ctx.Err()
		w.cancelAll(ErrShutdown)
		w.handBackAll()
	}
	close(w.quit)
	_ = w.ctl.Close()
	w.support.Wait()
	w.eng.Close()
	return err
}

// cancelAll cancels the ctx of every job in flight with cause.
func (w *Worker) cancelAll(cause error) {
	w.inflightMu.Lock()
	defer w.inflightMu.Unlock()
	for _, j := range w.inflight {
		j.cancel(cause)
	}
}

// handBackAll returns every task still in flight to its queue's stream now.
// Their handlers' later outcomes fail the fence and are dropped.
func (w *Worker) handBackAll() {
	w.inflightMu.Lock()
	var left []*job
	for k, j := range w.inflight {
		left = append(left, j)
		delete(w.inflight, k)
	}
	w.inflightMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	byQueue := map[*queue][]store.Completion{}
	for _, j := range left {
		if j.env == nil {
			// A malformed entry: its dead-letter outcome is queued; if it
			// is not recorded, the entry is read again after its lease.
			continue
		}
		c := w.parkCompletion(j, 0)
		c.Group = j.env.Group
		byQueue[j.q] = append(byQueue[j.q], c)
	}
	for q, items := range byQueue {
		if _, err := store.Complete(ctx, w.rdb, q.keys, w.cfg.Name, items); err != nil {
			w.log.Error("hand back unfinished tasks; they return after their lease", slog.String("queue", q.keys.Name), slog.Any("err", err))
		}
	}
}

func (w *Worker) streamsToRead(q []*queue) []string {
	s := make([]string, 0, 2*len(q))
	for _, x := range q {
		s = append(s, x.keys.Stream())
	}
	for range q {
		s = append(s, ">")
	}
	return s
}

// order returns the queues in the order one fetch tries them.
func (w *Worker) order() []*queue {
	if len(w.queues) == 1 || w.cfg.StrictPriority {
		return w.queues
	}
	rest := append([]*queue(nil), w.queues...)
	out := make([]*queue, 0, len(rest))
	for len(rest) > 0 {
		total := 0
		for _, q := range rest {
			total += q.weight
		}
		r := rand.IntN(total)
		for i, q := range rest {
			if r < q.weight {
				out = append(out, q)
				rest = append(rest[:i], rest[i+1:]...)
				break
			}
			r -= q.weight
		}
	}
	return out
}
