package metrics_test

import (
	"context"
	"math"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/metrics"
)

// Mail is the task of these tests.
type Mail struct{ To string }

func (Mail) Kind() string { return "mail" }

// enqueue puts n tasks into queue q, each delay ahead (0: now).
func enqueue(t testing.TB, c *client.Client, q string, n int, delay time.Duration) {
	t.Helper()
	for range n {
		if _, err := c.Enqueue(context.Background(), Mail{To: "a@example.com"}, &client.EnqueueOpts{Queue: q, Delay: delay}); err != nil {
			t.Fatal(err)
		}
	}
}

func newClient(t testing.TB, rdb redis.UniversalClient) *client.Client {
	t.Helper()
	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// snapshotAge returns async_queue_snapshot_age_seconds.
func snapshotAge(t testing.TB, g prometheus.Gatherer) float64 {
	t.Helper()
	return value(t, g, "async_queue_snapshot_age_seconds")
}

// waitSnapshot waits for the first reading of the background refresh.
func waitSnapshot(t testing.TB, g prometheus.Gatherer) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, "the first queue snapshot", func() bool {
		return !math.IsInf(snapshotAge(t, g), 1)
	})
}

// The queue gauges show the inspector's counts as of the last reading; a
// reading replaces them, and the age says how old they are.
func TestSnapshotGauges(t *testing.T) {
	env := testenv.Redis(t)
	ctx := context.Background()
	q := testenv.Queue(t)
	c := newClient(t, env.RDB)
	enqueue(t, c, q, 2, 0)
	enqueue(t, c, q, 1, time.Hour)

	m, reg := newMetrics(t, metrics.Opts{Inspector: inspect.New(env.RDB), Refresh: time.Hour})
	waitSnapshot(t, reg)
	check := func(waiting, scheduled float64) {
		t.Helper()
		for state, want := range map[string]float64{"waiting": waiting, "running": 0, "scheduled": scheduled, "retrying": 0, "held": 0, "dead": 0} {
			if got := value(t, reg, "async_queue_tasks", "queue", q, "state", state); got != want {
				t.Errorf("async_queue_tasks{state=%q} = %v, want %v", state, got, want)
			}
		}
		for name, want := range map[string]float64{"async_queue_paused": 0, "async_queue_processed_total": 0, "async_queue_failed_total": 0} {
			if got := value(t, reg, name, "queue", q); got != want {
				t.Errorf("%s = %v, want %v", name, got, want)
			}
		}
	}
	check(2, 1)

	// Not refreshed: the gauges still show the first reading.
	enqueue(t, c, q, 3, 0)
	check(2, 1)

	before := time.Now()
	if err := m.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if age, most := snapshotAge(t, reg), time.Since(before).Seconds(); age < 0 || age > most {
		t.Errorf("age right after a reading = %vs, want within [0, %v]", age, most)
	}
	check(5, 1)
	if got := value(t, reg, "async_queue_snapshot_errors_total"); got != 0 {
		t.Errorf("async_queue_snapshot_errors_total = %v, want 0", got)
	}

	// Paused fleet-wide (the flag Inspector.Pause sets).
	if err := env.RDB.Set(ctx, keys.ForQueue(q).Paused(), "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := m.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := value(t, reg, "async_queue_paused", "queue", q); got != 1 {
		t.Errorf("async_queue_paused of a paused queue = %v, want 1", got)
	}
}

// A scrape answers from the last reading without a word to Redis: while
// Redis does not answer (a reading is stuck in flight) and once the client
// is closed, it shows the last good values, their growing age, and the
// failed readings.
func TestScrapeWithoutRedis(t *testing.T) {
	var env *testenv.Env
	if os.Getenv(testenv.EnvCluster) != "" {
		env = testenv.IsolatedRedis(t, 0) // a new miniredis: the proxy serves one address
	} else {
		env = testenv.Redis(t)
	}
	ctx := context.Background()
	q := testenv.Queue(t)
	enqueue(t, newClient(t, env.RDB), q, 2, 0)

	p := testenv.NewFaultProxy(t, env.Addr)
	// No resend, no read deadline: a command the proxy holds keeps its
	// caller waiting until the connection is cut.
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), DB: env.DB, MaxRetries: -1, ReadTimeout: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	m, reg := newMetrics(t, metrics.Opts{Inspector: inspect.New(rdb), Refresh: time.Hour})
	waitSnapshot(t, reg)
	good := time.Now() // the last good reading ended before this

	// Redis stops answering: a reading goes out and hangs.
	p.Delay(func(testenv.Command) bool { return true }, time.Hour, 0)
	sent := len(p.Commands())
	refreshed := make(chan error, 1)
	go func() { refreshed <- m.Refresh(ctx) }()
	testenv.Eventually(t, 10*time.Second, "the reading to reach the proxy", func() bool { return len(p.Commands()) > sent })
	sent = len(p.Commands())

	scrape := time.Now()
	waiting := value(t, reg, "async_queue_tasks", "queue", q, "state", "waiting")
	age := snapshotAge(t, reg)
	took := time.Since(scrape)
	if waiting != 2 {
		t.Errorf("waiting during the hung reading = %v, want 2 (the last reading)", waiting)
	}
	if least := scrape.Sub(good).Seconds(); age < least {
		t.Errorf("age = %vs, want at least %vs (the time since the last good reading)", age, least)
	}
	select {
	case err := <-refreshed:
		t.Fatalf("the reading returned (%v) while Redis held its command", err)
	default: // the scrape answered while the reading was stuck
	}
	if n := len(p.Commands()); n != sent {
		t.Errorf("the scrape sent %d command(s) to Redis, want none", n-sent)
	}
	t.Logf("scrape with a reading stuck in flight took %v", took)

	p.CutAll()
	if err := <-refreshed; err == nil {
		t.Fatal("the cut reading returned no error")
	}
	if got := value(t, reg, "async_queue_snapshot_errors_total"); got != 1 {
		t.Errorf("async_queue_snapshot_errors_total = %v after the cut reading, want 1", got)
	}

	// The client closed: readings fail at once, scrapes still answer.
	p.ClearRules()
	_ = rdb.Close()
	if err := m.Refresh(ctx); err == nil {
		t.Fatal("a reading on a closed client returned no error")
	}
	if got := value(t, reg, "async_queue_snapshot_errors_total"); got != 2 {
		t.Errorf("async_queue_snapshot_errors_total = %v after a reading on a closed client, want 2", got)
	}
	if got := value(t, reg, "async_queue_tasks", "queue", q, "state", "waiting"); got != 2 {
		t.Errorf("waiting with the client closed = %v, want 2 (the last reading)", got)
	}
}

// The background goroutine reads again every Refresh, and Close stops it
// (goleak checks that it is gone).
func TestSnapshotRefreshesInBackground(t *testing.T) {
	env := testenv.Redis(t)
	q := testenv.Queue(t)
	c := newClient(t, env.RDB)
	_, reg := newMetrics(t, metrics.Opts{Inspector: inspect.New(env.RDB), Refresh: 50 * time.Millisecond})
	waitSnapshot(t, reg)
	enqueue(t, c, q, 4, 0)
	testenv.Eventually(t, 10*time.Second, "a later reading to show 4 waiting", func() bool {
		s, ok := find(t, reg, "async_queue_tasks", "queue", q, "state", "waiting")
		return ok && s.Value == 4
	})
}

func TestRefreshWithoutInspector(t *testing.T) {
	m, _ := newMetrics(t, metrics.Opts{})
	if err := m.Refresh(context.Background()); err == nil {
		t.Fatal("Refresh without an Inspector returned no error")
	}
	m.Close()
	m.Close() // idempotent
}

// Close returns while Redis hangs: the reading in flight ends at the
// client's ReadTimeout and the goroutine is gone (goleak checks it).
func TestCloseWhileRedisHangs(t *testing.T) {
	var env *testenv.Env
	if os.Getenv(testenv.EnvCluster) != "" {
		env = testenv.IsolatedRedis(t, 0) // a new miniredis: the proxy serves one address
	} else {
		env = testenv.Redis(t)
	}
	p := testenv.NewFaultProxy(t, env.Addr)
	p.Delay(func(testenv.Command) bool { return true }, time.Hour, 0)
	rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), DB: env.DB, MaxRetries: -1, ReadTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.Opts{Registerer: reg, Inspector: inspect.New(rdb), Refresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the first reading to reach the proxy", func() bool { return len(p.Commands()) > 0 })
	closed := make(chan struct{})
	go func() { m.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return within 30s of a 100ms ReadTimeout")
	}
	if got := snapshotAge(t, reg); !math.IsInf(got, 1) {
		t.Errorf("age with no reading ever = %v, want +Inf", got)
	}
}
