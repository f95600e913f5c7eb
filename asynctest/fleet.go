package asynctest

import (
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
const EnvRedisURL = "ASYNCTEST_REDIS_URL"

// Options shape a Fleet. The zero value (or nil) gives one worker serving
// "default", one coordinator and one client, with the kit's test timings.
type Options struct {
	// Workers is how many workers NewFleet starts when it is given handlers
	// to register. Defaults to 1.
	Workers int
	// Worker is the template of every worker's configuration; fields left
	// zero get the kit's test timings (see the package doc).
	Worker worker.Config
	// Client is the configuration of the fleet's client (Fleet.Client).
	Client client.Config
	// Coordinator is the configuration of the fleet's coordinator.
	Coordinator coordinator.Config
	// NoCoordinator leaves the coordinator out.
	NoCoordinator bool
	// Clock, when set, stops Redis' clock at Clock: it then moves only
	// with Fleet.Advance (miniredis only).
	Clock time.Time
	// WaitTimeout bounds every wait of the kit (WaitTask, WaitGroup...).
	// Defaults to 10s.
	WaitTimeout time.Duration
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
}

// NewFleet starts a fleet for t, stopped at t's cleanup: a Redis (an
// embedded miniredis, or the one EnvRedisURL names), a client, a
// coordinator and, when register is not nil, Options.Workers workers on
// which register registers the handlers.
func NewFleet(t testing.TB, register func(w *worker.Worker), opts *Options) *Fleet {
	panic("asynctest: not yet")
}

// StartWorkers starts n more workers, each with the handlers register
// registers, stopped at t's cleanup.
func (f *Fleet) StartWorkers(n int, register func(w *worker.Worker)) []*worker.Worker {
	panic("asynctest: not yet")
}

// Client returns the fleet's client; what it enqueues is recorded.
func (f *Fleet) Client() *client.Client { return f.client }

// NewClient returns another client of the fleet's Redis, closed at t's
// cleanup; what it enqueues is recorded too.
func (f *Fleet) NewClient(cfg *client.Config) *client.Client {
	panic("asynctest: not yet")
}

// Redis returns a client of the fleet's Redis.
func (f *Fleet) Redis() redis.UniversalClient { return f.rdb }

// Miniredis returns the embedded miniredis, or nil on a real Redis.
func (f *Fleet) Miniredis() *miniredis.Miniredis { return f.mini }

// Real reports whether the fleet runs on a real Redis.
func (f *Fleet) Real() bool { return f.mini == nil }

// Workers returns the fleet's workers, in the order they started.
func (f *Fleet) Workers() []*worker.Worker { return append([]*worker.Worker(nil), f.workers...) }

// Coordinator returns the fleet's coordinator, or nil (NoCoordinator).
func (f *Fleet) Coordinator() *coordinator.Coordinator { return f.co }

// Inspector returns an inspector of the fleet's Redis.
func (f *Fleet) Inspector() *inspect.Inspector { return f.insp }
