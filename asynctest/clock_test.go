package asynctest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Tick is the task of a schedule.
type Tick struct{}

func (Tick) Kind() string { return "kit.tick" }

// The done-when: a Repeat every hour, tested over three slots
// without sleeping. Each Advance makes one slot due; its task runs once, on
// the fleet's workers, under the slot's id.
func TestRepeatHourlyThreeSlots(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	var ran []string
	f := NewFleet(t, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, _ Tick) (string, error) {
			tk, _ := worker.TaskFromContext(ctx)
			mu.Lock()
			ran = append(ran, tk.ID)
			mu.Unlock()
			return tk.ID, nil
		})
	}, &Options{Clock: t0, Workers: 2, Embedded: true})
	ctx := context.Background()
	if now := f.Now(); !now.Equal(t0) {
		t.Fatalf("Redis' time %v, want the stopped clock's %v", now, t0)
	}
	s, err := patterns.Repeat(ctx, f.Client(), "hourly", client.Spec{Args: Tick{}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Next().Equal(t0.Add(time.Hour)) {
		t.Fatalf("first slot %v, want %v", s.Next(), t0.Add(time.Hour))
	}
	var want []string
	for i := 1; i <= 3; i++ {
		if now := f.Advance(time.Hour); !now.Equal(t0.Add(time.Duration(i) * time.Hour)) {
			t.Fatalf("Advance returned %v", now)
		}
		id := "default/r.hourly." + strconv.FormatInt(t0.Add(time.Duration(i)*time.Hour).UnixMilli(), 10)
		want = append(want, id)
		h, err := f.Client().Task(id)
		if err != nil {
			t.Fatal(err)
		}
		// The slot's task is in its queue once Advance returned.
		if st, err := h.State(ctx); err != nil || st == client.State("") {
			t.Fatalf("slot %d: task %s: %q, %v", i, id, st, err)
		}
		if got, err := result[string](t, f, h); err != nil || got != id {
			t.Fatalf("slot %d: result %q, %v", i, got, err)
		}
	}
	// One run per slot, and nothing else: the clock stood still between
	// the jumps.
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(ran) != fmt.Sprint(want) {
		t.Errorf("runs %v, want %v", ran, want)
	}
	infos, err := patterns.Repeats(ctx, f.Client())
	if err != nil || len(infos) != 1 || infos[0].Fired != 3 || !infos[0].Next.Equal(t0.Add(4*time.Hour)) {
		t.Errorf("schedules %+v, %v; want hourly fired 3 times, next at %v", infos, err, t0.Add(4*time.Hour))
	}
}

// Advance makes a delayed task due (here without a coordinator of the
// fleet), and moves TTLs with the clock. The client counts a Delay from
// Redis' stopped time: the jumps that add up to the delay reach it.
func TestAdvanceDelayAndTTL(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	f := NewFleet(t, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Flaky) (int, error) { return a.N, nil })
	}, &Options{Clock: t0, NoCoordinator: true, Embedded: true})
	ctx := context.Background()
	h, err := f.Client().Enqueue(ctx, Flaky{N: 5}, &client.EnqueueOpts{Delay: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Redis().Set(ctx, "ttl-probe", "x", 2*time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	f.Advance(time.Hour)
	if st, err := h.State(ctx); err != nil || st != client.StateScheduled {
		t.Fatalf("after an hour: %q, %v; want scheduled", st, err)
	}
	f.Advance(23 * time.Hour)
	if n, err := result[int](t, f, h); err != nil || n != 5 {
		t.Fatalf("result %d, %v", n, err)
	}
	if n, err := f.Redis().Exists(ctx, "ttl-probe").Result(); err != nil || n != 0 {
		t.Errorf("a key with a 2h TTL exists after 24h: %d, %v", n, err)
	}
}

// On a real Redis (here a URL to a miniredis, which the kit treats as
// one), Advance skips the test, saying why.
func TestClockSkipsOnRealRedis(t *testing.T) {
	t.Parallel()
	url := "redis://" + miniredis.RunT(t).Addr() + "/0"
	for name, body := range map[string]func(tb testing.TB){
		"Advance": func(tb testing.TB) { NewFleet(tb, nil, &Options{redisURL: url}).Advance(time.Hour) },
	} {
		tb := newFakeTB(t, name)
		tb.run(body)
		if !tb.skipped || len(tb.failures()) != 0 {
			t.Errorf("%s: skipped %v, failures %q; want skipped", name, tb.skipped, tb.failures())
		}
	}
}

// Options.Clock implies Embedded: with a real Redis named, the fleet runs
// on an embedded miniredis stopped at Clock, and the test is not skipped.
func TestClockImpliesEmbedded(t *testing.T) {
	t.Parallel()
	url := "redis://" + miniredis.RunT(t).Addr() + "/0"
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	tb := newFakeTB(t, "Clock")
	var embedded bool
	var now time.Time
	tb.run(func(tb testing.TB) {
		f := NewFleet(tb, nil, &Options{redisURL: url, Clock: t0})
		embedded = !f.Real() && f.Miniredis() != nil
		now = f.Advance(time.Minute)
	})
	if tb.skipped || len(tb.failures()) != 0 {
		t.Fatalf("skipped %v, failures %q; want a fleet on miniredis", tb.skipped, tb.failures())
	}
	if !embedded || !now.Equal(t0.Add(time.Minute)) {
		t.Errorf("embedded %v, Advance reached %v; want an embedded fleet at %v", embedded, now, t0.Add(time.Minute))
	}
}
