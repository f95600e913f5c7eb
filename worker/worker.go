package worker

// Goroutines. Each of a Worker's goroutines has one owner, which starts it
// and waits for it to end:
//
//   - intake (a loops, started by Start, stopped first by shutdown):
//     fetchLoop, which reads new entries, takes over expired and lost ones
//     (reclaim, adopt) and dispatches them; forwardLoop and housekeepLoop
//     (maintain.go); pauseLoop (pause.go). Its ctx ends when the worker
//     stops.
//   - execs: one goroutine per job that runs a handler (exec), started by
//     dispatch; shutdown waits for them, or, its ctx ended first, cancels
//     them and hands their tasks back.
//   - support (a loops, started by Start, stopped by shutdown once no
//     handler runs, so that every outcome was handed to it): the
//     completers, heartbeatLoop (which owns and waits for its rounds'
//     goroutines), watchdogLoop, controlLoop and registryLoop. Its ctx ending (quit) tells
//     them to record what is queued and return.
//
// No other goroutine outlives the call that starts it.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/maintain"
	"github.com/taskfleet/async/internal/store"
)

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
	mws      []Middleware // added by Use
	tracers  *engine.Tracers

	queues  []*queue
	byName  map[string]*queue
	limits  map[string]*limiter // by scope ("kind:<kind>", "queue:<queue>")
	rates   *rates
	slots   chan struct{} // one token per running (or about to run) handler
	holds   chan struct{} // one token per entry pending here (holdsFor)
	ahead   readAhead     // how many entries are read beyond the free slots
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

	keep    *maintain.Keeper // forwarding and housekeeping of the queues
	fwdWake chan struct{}

	pause pauseState // the queues paused now (pause.go)
	reg   registry   // the worker's registration (registry.go)

	shards shardState // the queues served once shards joined (shard21.go)

	intake   loops          // fetch, forwarding, housekeeping
	execs    sync.WaitGroup // running handlers
	support  loops          // completers, heartbeats, watchdog, control
	stopped  chan struct{}
	stopOnce sync.Once
	stopErr  error
}

// loops is a set of goroutines started and stopped together, sharing a ctx
// that ends when they must stop.
type loops struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newLoops() loops {
	ctx, cancel := context.WithCancel(context.Background())
	return loops{ctx: ctx, cancel: cancel}
}

// run starts f on a goroutine of its own, with the loops' ctx.
func (l *loops) run(f func(ctx context.Context)) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		f(l.ctx)
	}()
}

// wait waits for every goroutine started by run to return.
func (l *loops) wait() { l.wg.Wait() }

// quit is closed when the support loops must end.
func (w *Worker) quit() <-chan struct{} { return w.support.ctx.Done() }

type queue struct {
	keys   keys.Queue
	weight int
	cursor string // XAUTOCLAIM cursor

	logical string // a shard's sharded queue, else "" (shard21.go)

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
		fwdWake:       make(chan struct{}, 1),
		intake:        newLoops(),
		support:       newLoops(),
		keep: maintain.New(rdb, maintain.Settings{
			DeadLetterCap: c.DeadLetterCap,
			// A worker's consumer idles between its reads for up to a
			// lease: one idle for ten leases is gone.
			ConsumerIdle: max(10*c.Lease, maintain.DefaultConsumerIdle),
			Retention:    c.Retention,
		}),
	}
	w.tracers = engine.NewTracers(c.TracerProvider)
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
	eng, err := engine.New(ctx, rdb, engine.Config{Logger: c.Logger, Retention: c.Retention})
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
	handlers, err := w.wrapHandlers()
	if err != nil {
		return err
	}
	if err := w.initShards(ctx); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	for _, q := range w.queues {
		if err := store.EnsureGroup(ctx, w.rdb, q.keys); err != nil {
			return fmt.Errorf("worker: %w", err)
		}
	}
	if err := w.clock.Sync(ctx, w.rdb); err != nil {
		return fmt.Errorf("worker: read redis time: %w", err)
	}
	qs := make([]keys.Queue, len(w.queues))
	for i, q := range w.queues {
		qs[i] = q.keys
	}
	// It waits for every confirmation: a cancel request sent after Start
	// returned reaches this worker.
	ctl, err := store.SubscribeControl(ctx, w.rdb, qs, 10*time.Second)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	w.ctl = ctl
	w.started = time.Now()
	if err := w.initPause(ctx); err != nil {
		_ = ctl.Close()
		return fmt.Errorf("worker: %w", err)
	}
	w.initRegistry(ctx)
	w.slots = make(chan struct{}, w.cfg.Concurrency)
	for i := 0; i < w.cfg.Concurrency; i++ {
		w.slots <- struct{}{}
	}
	nh := holdsFor(w.cfg.Concurrency, w.cfg.FetchBatch)
	w.holds = make(chan struct{}, nh)
	for i := 0; i < nh; i++ {
		w.holds <- struct{}{}
	}
	w.results = make(chan *outcome, nh)
	w.handlers = handlers

	w.ahead.queue = make(chan *job, w.cfg.FetchBatch+1)
	w.ahead.started = make(chan struct{}, 1)
	w.ahead.off = w.cfg.StrictPriority && len(w.cfg.Queues) > 1 // configured queues: shards keep no priority among themselves
	for i := 0; i < completers; i++ {
		w.support.run(w.completeLoop)
	}
	w.support.run(w.aheadLoop)
	w.support.run(w.heartbeatLoop)
	w.support.run(w.watchdogLoop)
	w.support.run(w.controlLoop)
	w.support.run(w.registryLoop)
	w.intake.run(w.pauseLoop)
	w.intake.run(w.fetchLoop)
	w.intake.run(w.forwardLoop)
	w.intake.run(w.housekeepLoop)
	w.intake.run(w.shardLoop)
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

// shutdown stops the worker's goroutines, owner by owner (see the top of
// this file): intake first, then the handlers, then support.
func (w *Worker) shutdown(ctx context.Context, cancelNow bool) error {
	w.intake.cancel()
	if cancelNow {
		w.cancelAll(ErrShutdown)
	}
	w.intake.wait()
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
	w.support.cancel()
	_ = w.ctl.Close() // ends controlLoop's Receive
	w.support.wait()
	w.unregister()
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
