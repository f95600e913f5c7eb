package asynctest

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/worker"
)

// EnvRedisURL names the environment variable that points the kit at a real
// Redis (redis://host:port/db) instead of an embedded miniredis.
//
// A fleet owns the database it names for its whole life: it takes a lock
// key there (a fleet of another test, or of another package's test
// process, waits for it, up to 2 minutes while one holder keeps it; a
// second fleet of the same test fails at once, as it would wait for
// ever), empties the database and, at cleanup, releases it. So give the kit a database of its own: a database
// holding keys the kit did not write (no marker key of the kit's) is
// refused, never flushed. Tests that run fleets in parallel run one at a
// time on a real Redis.
const EnvRedisURL = "ASYNCTEST_REDIS_URL"

// The kit's test timings, given to the fields of Options.Worker and
// Options.Coordinator left zero. With them a round trip (enqueue, run,
// result) takes a few milliseconds, and a fleet stops in about one
// TestBlockTimeout:
//
//   - worker BlockTimeout: TestBlockTimeout (10ms). A read waiting for new
//     tasks returns as soon as one arrives; the timeout only bounds how
//     long a stopping worker waits for its last read.
//   - worker Lease: TestLease (2s). Heartbeats go every 500ms; a worker
//     that stops heartbeating loses its tasks to the others 2s after its
//     last heartbeat, and LoseWorker's within 500ms and a read.
//   - worker Backoff: TestBackoff (none). A failed attempt is retried at
//     once.
//   - worker Name: "asynctest-1", "asynctest-2"... in the order the
//     fleet's workers start (always set by the fleet).
//   - coordinator MaxSleep: TestMaxSleep (100ms).
//
// Everything else keeps the library's defaults (Concurrency 100, one queue
// "default", ...). Logs of warnings and errors go to the test's log.
const (
	// TestBlockTimeout is the workers' BlockTimeout.
	TestBlockTimeout = 10 * time.Millisecond
	// TestLease is the workers' Lease.
	TestLease = 2 * time.Second
	// TestMaxSleep is the coordinator's MaxSleep.
	TestMaxSleep = 100 * time.Millisecond
)

// TestBackoff is the workers' Backoff: no delay. A failed attempt's retry
// is scheduled (in Redis' time) for now, and the worker that recorded the
// failure moves it into its queue's stream at once (it wakes its own
// forwarder, coordinator or not): the next attempt runs within a read, on
// any worker of the queue, even with a stopped clock.
func TestBackoff(int) time.Duration { return 0 }

// Options shape a Fleet. The zero value (or nil) gives one worker serving
// "default", one coordinator and one client, with the kit's test timings.
type Options struct {
	// Workers is how many workers NewFleet starts when it is given handlers
	// to register. Defaults to 1.
	Workers int
	// Worker is the template of every worker's configuration; fields left
	// zero get the kit's test timings (see the package doc). Name is set
	// by the fleet ("asynctest-1", "asynctest-2"... in the order they
	// start); the kit's middleware (FailNext, LoseWorker) is put in front
	// of Middleware, outermost.
	Worker worker.Config
	// Client is the configuration of the fleet's client (Fleet.Client).
	// The recorder of Fleet.Enqueued is added to its EnqueuedHooks.
	Client client.Config
	// Coordinator is the configuration of the fleet's coordinator.
	// MaxSleep defaults to TestMaxSleep.
	Coordinator coordinator.Config
	// NoCoordinator leaves the coordinator out.
	NoCoordinator bool
	// Clock, when set, stops Redis' clock at Clock: it then moves only
	// with Fleet.Advance, and the fleet's processes read it as Redis'
	// time (see Advance). A fleet with a Clock always runs on an embedded
	// miniredis (it implies Embedded): a real Redis' clock cannot be
	// stopped.
	Clock time.Time
	// WaitTimeout bounds every wait of the kit (WaitTask, WaitGroup...).
	// Defaults to 10s.
	WaitTimeout time.Duration
	// IgnoreGoroutines names functions (as a stack trace spells them:
	// "example.com/pool.(*Pool).keepAlive") of goroutines the leak check
	// at cleanup leaves out: a goroutine whose top function (the first
	// one outside the runtime, as goleak.IgnoreTopFunction matches) or
	// whose start function (the one its go statement called) is listed.
	// For the pools of long-lived workers a handler may start, which
	// outlive it by design. Goroutines of net/http's keep-alive
	// connections are always left out.
	IgnoreGoroutines []string
	// Embedded keeps the fleet on an embedded miniredis even when
	// EnvRedisURL is set: for a test that moves the clock (Advance), which
	// a real Redis cannot do. Clock implies it.
	Embedded bool

	// For the kit's own tests: the Redis URL instead of EnvRedisURL, and
	// a hook told when the database's lock is held by another fleet.
	redisURL   string
	onLockWait func(holder string)
	leakBound  time.Duration // defaults to leakBound
	lockWait   time.Duration // defaults to lockWait
}

// Fleet is a whole async fleet inside one test. Its methods call t.Fatal
// on failure: call them from the test's goroutine.
type Fleet struct {
	t       testing.TB
	opts    Options
	rdb     redis.UniversalClient
	mini    *miniredis.Miniredis
	client  *client.Client
	rec     *recorder
	insp    *inspect.Inspector
	co      *coordinator.Coordinator
	workers []*worker.Worker
	faults  *faults

	id     string         // the value of the fleet's pprof label
	ropts  *redis.Options // how each of the fleet's processes reaches Redis
	own    *ownership     // the database, on a real Redis
	logger *slog.Logger   // for the components the user gave none

	mu      sync.Mutex
	procs   []*proc // the workers, in order
	clients []*client.Client
	rdbs    []redis.UniversalClient // closed last
	ticker  *coordinator.Coordinator

	stopped atomic.Pointer[time.Time] // Redis' time, while the fleet's clock is stopped

	logMu  sync.Mutex
	closed bool // the cleanup ended: logs are dropped
}

// proc is one worker of the fleet, with its own Redis client, which
// LoseWorker can cut off.
type proc struct {
	w    *worker.Worker
	cfg  worker.Config
	rdb  *fleetRDB
	line *line
}

// fleetSeq numbers the fleets of the process, for their labels.
var fleetSeq atomic.Int64

// LabelKey is the pprof label every goroutine of a fleet carries (its
// value names the fleet): the fleet's leak check at cleanup looks for
// goroutines that still carry it.
const LabelKey = "asynctest"

// NewFleet starts a fleet for t, stopped at t's cleanup: a Redis (an
// embedded miniredis, or the one EnvRedisURL names), a client, a
// coordinator and, when register is not nil, Options.Workers workers on
// which register registers the handlers.
//
// At cleanup the fleet stops its workers (letting running handlers
// finish), its coordinator and its clients, and then fails the test if a
// goroutine it started (a handler's, a middleware's too) is still running
// after 5s, listing their stacks: the check is the fleet's own, so tests
// running in parallel do not disturb it.
func NewFleet(t testing.TB, register func(w *worker.Worker), opts *Options) *Fleet {
	t.Helper()
	f := &Fleet{t: t, rec: &recorder{}, faults: &faults{},
		id: fmt.Sprintf("%d:%s", fleetSeq.Add(1), t.Name())}
	if opts != nil {
		f.opts = *opts
	}
	if f.opts.Workers <= 0 {
		f.opts.Workers = 1
	}
	if f.opts.WaitTimeout <= 0 {
		f.opts.WaitTimeout = 10 * time.Second
	}
	f.logger = f.newLogger(nil)
	t.Cleanup(f.cleanup)
	f.labeled(func(ctx context.Context) { f.start(ctx) })
	if register != nil {
		f.StartWorkers(f.opts.Workers, register)
	}
	return f
}

// newLogger returns the logger of the fleet's components (of a worker on
// line l), which writes warnings and errors to the test's log.
func (f *Fleet) newLogger(l *line) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{f, l}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// labeled runs fn with the fleet's pprof label: the goroutines it starts
// (and theirs, in turn) carry it.
func (f *Fleet) labeled(fn func(ctx context.Context)) {
	pprof.Do(context.Background(), pprof.Labels(LabelKey, f.id), fn)
}

func (f *Fleet) start(ctx context.Context) {
	t := f.t
	t.Helper()
	url := f.opts.redisURL
	if !f.opts.Clock.IsZero() {
		// A stopped clock needs the embedded miniredis.
		url = ""
	} else if url == "" && !f.opts.Embedded {
		url = os.Getenv(EnvRedisURL)
	}
	if url != "" {
		o, err := redis.ParseURL(url)
		if err != nil {
			t.Fatalf("asynctest: %s: %v", EnvRedisURL, err)
		}
		o.ContextTimeoutEnabled = true
		f.ropts = o
		f.own = f.ownDB(ctx)
	} else {
		m := miniredis.NewMiniRedis()
		if err := m.Start(); err != nil {
			t.Fatalf("asynctest: start miniredis: %v", err)
		}
		f.mini = m
		if !f.opts.Clock.IsZero() {
			m.SetTime(f.opts.Clock)
			at := f.opts.Clock
			f.stopped.Store(&at)
		}
		f.ropts = &redis.Options{Addr: m.Addr(), ContextTimeoutEnabled: true}
	}
	f.rdb = f.newRDB(nil)
	f.client = f.NewClient(&f.opts.Client)
	f.insp = inspect.New(f.rdb)
	if !f.opts.NoCoordinator {
		cfg := f.opts.Coordinator
		if cfg.MaxSleep == 0 {
			cfg.MaxSleep = TestMaxSleep
		}
		if cfg.Logger == nil {
			cfg.Logger = f.logger
		}
		co, err := coordinator.New(ctx, f.newRDB(nil), &cfg)
		if err != nil {
			t.Fatalf("asynctest: %v", err)
		}
		if err := co.Start(ctx); err != nil {
			t.Fatalf("asynctest: %v", err)
		}
		f.co = co
	}
}

// newRDB returns a new client of the fleet's Redis (closed at cleanup),
// cut off by l when l is not nil.
func (f *Fleet) newRDB(l *line) *fleetRDB {
	o := *f.ropts
	rdb := &fleetRDB{Client: redis.NewClient(&o), f: f}
	if l != nil {
		rdb.AddHook(l)
	}
	f.mu.Lock()
	f.rdbs = append(f.rdbs, rdb)
	f.mu.Unlock()
	return rdb
}

// fleetRDB is a client of the fleet's Redis that tells the library's
// clocks (store.StoppedClock) when the fleet stopped Redis' clock, so that
// every process of the fleet reads the stopped time as Redis' time.
type fleetRDB struct {
	*redis.Client
	f *Fleet
}

// StoppedAt reports the time the fleet's Redis clock stands at, and false
// while it runs.
func (r *fleetRDB) StoppedAt() (time.Time, bool) {
	if at := r.f.stopped.Load(); at != nil {
		return *at, true
	}
	return time.Time{}, false
}

// StartWorkers starts n more workers, each with the handlers register
// registers, stopped at t's cleanup. Each has a Redis client of its own,
// as a worker process has.
func (f *Fleet) StartWorkers(n int, register func(w *worker.Worker)) []*worker.Worker {
	f.t.Helper()
	var out []*worker.Worker
	f.labeled(func(ctx context.Context) {
		for i := 0; i < n; i++ {
			out = append(out, f.startWorker(ctx, register))
		}
	})
	return out
}

func (f *Fleet) startWorker(ctx context.Context, register func(w *worker.Worker)) *worker.Worker {
	f.t.Helper()
	cfg := f.opts.Worker
	cfg.Queues = maps.Clone(cfg.Queues)
	if len(cfg.Queues) == 0 {
		cfg.Queues = map[string]int{"default": 1}
	}
	if cfg.BlockTimeout == 0 {
		cfg.BlockTimeout = TestBlockTimeout
	}
	if cfg.Lease == 0 {
		cfg.Lease = TestLease
	}
	if cfg.Backoff == nil {
		cfg.Backoff = TestBackoff
	}
	p := &proc{line: &line{}}
	if cfg.Logger == nil {
		cfg.Logger = f.newLogger(p.line)
	}
	f.mu.Lock()
	cfg.Name = fmt.Sprintf("asynctest-%d", len(f.procs)+1)
	f.mu.Unlock()
	cfg.Middleware = append([]worker.Middleware{f.middleware(p)}, cfg.Middleware...)
	p.cfg = cfg
	p.rdb = f.newRDB(p.line)
	w, err := worker.New(ctx, p.rdb, &cfg)
	if err != nil {
		f.t.Fatalf("asynctest: %v", err)
	}
	p.w = w
	if register != nil {
		register(w)
	}
	if err := w.Start(ctx); err != nil {
		f.t.Fatalf("asynctest: %v", err)
	}
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.workers = append(f.workers, w)
	f.mu.Unlock()
	return w
}

// Client returns the fleet's client; what it enqueues is recorded.
func (f *Fleet) Client() *client.Client { return f.client }

// NewClient returns another client of the fleet's Redis, closed at t's
// cleanup; what it enqueues is recorded too.
func (f *Fleet) NewClient(cfg *client.Config) *client.Client {
	f.t.Helper()
	var c client.Config
	if cfg != nil {
		c = *cfg
	}
	c.EnqueuedHooks = append(append([]client.EnqueuedHook(nil), c.EnqueuedHooks...), f.rec.hook)
	if c.Logger == nil {
		c.Logger = f.logger
	}
	var cl *client.Client
	var err error
	f.labeled(func(ctx context.Context) {
		rdb := f.rdb
		if rdb == nil {
			rdb = f.newRDB(nil)
		}
		cl, err = client.New(ctx, rdb, &c)
	})
	if err != nil {
		f.t.Fatalf("asynctest: %v", err)
	}
	f.mu.Lock()
	f.clients = append(f.clients, cl)
	f.mu.Unlock()
	return cl
}

// Redis returns a client of the fleet's Redis.
func (f *Fleet) Redis() redis.UniversalClient { return f.rdb }

// Miniredis returns the embedded miniredis, or nil on a real Redis.
func (f *Fleet) Miniredis() *miniredis.Miniredis { return f.mini }

// Real reports whether the fleet runs on a real Redis.
func (f *Fleet) Real() bool { return f.mini == nil }

// Workers returns the fleet's workers, in the order they started.
func (f *Fleet) Workers() []*worker.Worker {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*worker.Worker(nil), f.workers...)
}

// Coordinator returns the fleet's coordinator, or nil (NoCoordinator).
func (f *Fleet) Coordinator() *coordinator.Coordinator { return f.co }

// Inspector returns an inspector of the fleet's Redis.
func (f *Fleet) Inspector() *inspect.Inspector { return f.insp }

// stopBound bounds the stop of each component at cleanup.
const stopBound = 10 * time.Second

// cleanup stops the fleet in order, then checks it left no goroutine.
func (f *Fleet) cleanup() {
	// Helpers down to each failure: the testing package reports it at the
	// line of t.Cleanup's caller's caller, the test's call of NewFleet.
	f.t.Helper()
	f.mu.Lock()
	procs := append([]*proc(nil), f.procs...)
	clients := append([]*client.Client(nil), f.clients...)
	rdbs := append([]redis.UniversalClient(nil), f.rdbs...)
	f.mu.Unlock()
	// Workers first, together: a lost worker is connected again so that
	// it stops cleanly (its late writes are fenced by their tokens).
	var wg sync.WaitGroup
	errs := make([]error, len(procs))
	for i, p := range procs {
		p.line.restore()
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), stopBound)
			defer cancel()
			errs[i] = p.w.Stop(ctx)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			f.t.Errorf("asynctest: stop worker %s: %v (a handler still runs?)", procs[i].cfg.Name, err)
		}
	}
	if f.co != nil {
		ctx, cancel := context.WithTimeout(context.Background(), stopBound)
		if err := f.co.Stop(ctx); err != nil {
			f.t.Errorf("asynctest: stop the coordinator: %v", err)
		}
		cancel()
	}
	for _, c := range clients {
		_ = c.Close()
	}
	if f.own != nil {
		f.own.release(f)
	}
	for _, r := range rdbs {
		_ = r.Close()
	}
	if f.mini != nil {
		f.mini.Close()
	}
	f.checkLeaks()
	f.logMu.Lock()
	f.closed = true
	f.logMu.Unlock()
}

// logWriter writes the fleet's components' logs (warnings and errors) to
// the test's log while the fleet lives; a worker's (l not nil) are dropped
// while LoseWorker holds it cut off.
type logWriter struct {
	f *Fleet
	l *line
}

func (w logWriter) Write(p []byte) (int, error) {
	if w.l != nil && w.l.isOff() {
		return len(p), nil
	}
	w.f.logMu.Lock()
	defer w.f.logMu.Unlock()
	if !w.f.closed {
		w.f.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
