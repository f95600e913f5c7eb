package patterns_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Tick is a repeated task.
type Tick struct{ V int }

func (Tick) Kind() string { return "tick" }

// tickRecorder is a worker handler that counts the runs of each task id.
type tickRecorder struct {
	mu   sync.Mutex
	runs map[string]int
	ids  []string
}

func (r *tickRecorder) handle(ctx context.Context, _ Tick) (int, error) {
	tk, _ := worker.TaskFromContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.runs == nil {
		r.runs = map[string]int{}
	}
	if r.runs[tk.ID] == 0 {
		r.ids = append(r.ids, tk.ID)
	}
	r.runs[tk.ID]++
	return 0, nil
}

func (r *tickRecorder) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

// slots returns the slot times (Unix ms) of the runs, in order, and fails t
// when a task ran more than once.
func (r *tickRecorder) slots(t *testing.T, queue, name string) []int64 {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	prefix := queue + "/r." + name + "."
	for id, n := range r.runs {
		if n != 1 {
			t.Errorf("task %s ran %d times", id, n)
		}
		ms, err := strconv.ParseInt(strings.TrimPrefix(id, prefix), 10, 64)
		if !strings.HasPrefix(id, prefix) || err != nil {
			t.Errorf("task id %q is not %s<slot ms>", id, prefix)
			continue
		}
		out = append(out, ms)
	}
	slices.Sort(out)
	return out
}

// Five coordinators fire every slot of a schedule exactly once, on the
// interval's grid.
func TestRepeatFiresEachSlotOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var rec tickRecorder
	b.worker(t, nil, func(w *worker.Worker) { worker.Handle(w, rec.handle) })
	testenv.StartCoordinators(t, b.env, 5)
	ctx := ctxT(t)
	name := "every100-" + b.queue[len(b.queue)-8:]
	const every = 100 * time.Millisecond
	s, err := patterns.Repeat(ctx, b.c, name, client.Spec{Args: Tick{V: 1}, Opts: &client.EnqueueOpts{Queue: b.queue}}, every)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Created() || s.Name() != name || s.Queue() != b.queue {
		t.Fatalf("schedule: created %v name %q queue %q", s.Created(), s.Name(), s.Queue())
	}
	testenv.Eventually(t, 20*time.Second, "8 slots", func() bool { return rec.distinct() >= 8 })
	if err := s.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	slots := rec.slots(t, b.queue, name)
	first := s.Next().UnixMilli()
	for i, ms := range slots {
		if (ms-first)%every.Milliseconds() != 0 || ms < first {
			t.Errorf("slot %d at %d is off the grid from %d every %v", i, ms, first, every)
		}
		if i > 0 && ms == slots[i-1] {
			t.Errorf("slot %d fired twice", ms)
		}
	}
	infos, err := patterns.Repeats(ctx, b.c)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.Name == name {
			t.Errorf("schedule still listed after Remove: %+v", in)
		}
	}
}

// Declaring the same schedule from many callers at once makes it once; a
// change updates it; Remove removes it.
func TestRepeatDeclareIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	name := "boot-" + b.queue[len(b.queue)-8:]
	spec := client.Spec{Args: Tick{V: 1}, Opts: &client.EnqueueOpts{Queue: b.queue, Meta: map[string]string{"a": "1", "b": "2", "c": "3"}}}
	var wg sync.WaitGroup
	scheds := make([]*patterns.Schedule, 8)
	errs := make([]error, 8)
	for i := range scheds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			scheds[i], errs[i] = patterns.Repeat(ctx, b.c, name, spec, time.Hour)
		}()
	}
	wg.Wait()
	created := 0
	for i, s := range scheds {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if s.Created() {
			created++
		}
		if s.Updated() {
			t.Errorf("declaration %d updated an identical schedule", i)
		}
		if !s.Next().Equal(scheds[0].Next()) {
			t.Errorf("declaration %d: next %v, another got %v", i, s.Next(), scheds[0].Next())
		}
	}
	if created != 1 {
		t.Fatalf("%d of 8 identical declarations created the schedule", created)
	}
	next := scheds[0].Next()

	// A new task keeps the timing; a new interval restarts it.
	s, err := patterns.Repeat(ctx, b.c, name, client.Spec{Args: Tick{V: 2}, Opts: &client.EnqueueOpts{Queue: b.queue}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Updated() || !s.Next().Equal(next) {
		t.Errorf("new task: updated %v, next %v (was %v)", s.Updated(), s.Next(), next)
	}
	s, err = patterns.Repeat(ctx, b.c, name, client.Spec{Args: Tick{V: 2}, Opts: &client.EnqueueOpts{Queue: b.queue}}, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Updated() || s.Next().Sub(next) < 50*time.Minute {
		t.Errorf("new interval: updated %v, next %v (was %v)", s.Updated(), s.Next(), next)
	}
	infos, err := patterns.Repeats(ctx, b.c)
	if err != nil {
		t.Fatal(err)
	}
	var found *patterns.RepeatInfo
	for i := range infos {
		if infos[i].Name == name {
			found = &infos[i]
		}
	}
	if found == nil || found.Every != 2*time.Hour || found.Queue != b.queue || found.Kind != "tick" || !found.Next.Equal(s.Next()) {
		t.Fatalf("listed: %+v", found)
	}

	// Moving it to another queue leaves nothing in the old one.
	other := b.queue + "-b"
	if _, err := patterns.Repeat(ctx, b.c, name, client.Spec{Args: Tick{V: 2}, Opts: &client.EnqueueOpts{Queue: other}}, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	if n, err := b.env.RDB.Exists(ctx, keys.ForQueue(b.queue).Repeat(name)).Result(); err != nil || n != 0 {
		t.Errorf("old queue still holds the definition: %d, %v", n, err)
	}
	ok, err := patterns.RemoveRepeat(ctx, b.c, name)
	if err != nil || !ok {
		t.Fatalf("RemoveRepeat: %v, %v", ok, err)
	}
	if ok, err := patterns.RemoveRepeat(ctx, b.c, name); err != nil || ok {
		t.Fatalf("second RemoveRepeat: %v, %v", ok, err)
	}
}

// Time travel on miniredis: a schedule fires its slots by Redis' clock, and
// after a long gap only the latest missed slot fires.
func TestRepeatTimeTravel(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 10, 20, 0, 0, time.UTC)
	m, rdb, c := clocked(t, t0)
	co, err := coordinator.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	if _, err := patterns.Repeat(ctx, c, "minutely", client.Spec{Args: Tick{}, Opts: &client.EnqueueOpts{Queue: "tt"}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	hourly, err := patterns.RepeatCron(ctx, c, "hourly", client.Spec{Args: Tick{}, Opts: &client.EnqueueOpts{Queue: "tt"}}, "0 * * * *", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 1, 1, 11, 0, 0, 0, time.UTC); !hourly.Next().Equal(want) {
		t.Fatalf("cron next %v, want %v", hourly.Next(), want)
	}
	step := func(at time.Time, want ...string) {
		t.Helper()
		m.SetTime(at)
		if err := co.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		for _, id := range want {
			h, err := c.Task("tt/" + id)
			if err != nil {
				t.Fatal(err)
			}
			if st, err := h.State(ctx); err != nil || st != client.StatePending {
				t.Errorf("at %v: task %s is %q (%v), want pending", at.Format("15:04:05"), id, st, err)
			}
		}
	}
	ms := func(d time.Duration) string { return strconv.FormatInt(t0.Add(d).UnixMilli(), 10) }
	step(t0.Add(30 * time.Second))
	step(t0.Add(61*time.Second), "r.minutely."+ms(time.Minute))
	// Three hours later: one run of each schedule, for its latest slot.
	step(t0.Add(3*time.Hour+30*time.Second), "r.minutely."+ms(3*time.Hour), "r.hourly."+ms(3*time.Hour-20*time.Minute))
	infos, err := patterns.Repeats(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 {
		t.Fatalf("%d schedules listed", len(infos))
	}
	for _, in := range infos {
		switch in.Name {
		case "hourly":
			if in.Fired != 1 || !in.Next.Equal(t0.Add(4*time.Hour-20*time.Minute)) {
				t.Errorf("hourly: %+v", in)
			}
		case "minutely":
			if in.Fired != 2 || !in.Next.Equal(t0.Add(3*time.Hour+time.Minute)) || in.Last != "tt/r.minutely."+ms(3*time.Hour) {
				t.Errorf("minutely: %+v", in)
			}
		}
	}
	if n, _ := rdb.XLen(ctx, "async:{q:tt}:stream").Result(); n != 3 {
		t.Errorf("%d tasks enqueued, want 3", n)
	}
}

// A schedule outlives every process: after all coordinators stop for
// several slots, new ones fire the latest missed slot once and go on. On a
// Redis of its own: a coordinator of another test would serve it.
func TestRepeatAcrossRestarts(t *testing.T) {
	env := testenv.IsolatedRedis(t, isolatedDB)
	b := &bundle{env: env, c: testenv.Client(t, env), queue: testenv.Queue(t)}
	var rec tickRecorder
	b.worker(t, nil, func(w *worker.Worker) { worker.Handle(w, rec.handle) })
	ctx := ctxT(t)
	name := "restart-" + b.queue[len(b.queue)-8:]
	const every = 400 * time.Millisecond
	ms := every.Milliseconds()
	// newCoordinators makes n coordinators, each on a client of its own,
	// without starting them: New checks the server and reads its clock,
	// which start need not wait for.
	newCoordinators := func(n int) []*coordinator.Coordinator {
		var cos []*coordinator.Coordinator
		for range n {
			rdb := testenv.NewEnvClient(b.env)
			co, err := coordinator.New(context.Background(), rdb, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := co.Stop(sctx); err != nil {
					t.Error(err)
				}
				_ = rdb.Close()
			})
			cos = append(cos, co)
		}
		return cos
	}
	run := func(cos []*coordinator.Coordinator, start bool) {
		for _, co := range cos {
			var err error
			if start {
				err = co.Start(ctx)
			} else {
				err = co.Stop(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	redisMs := func() int64 {
		now, err := b.env.RDB.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return now.UnixMilli()
	}
	fired := func() int {
		infos, err := patterns.Repeats(ctx, b.c)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range infos {
			if in.Name == name {
				return int(in.Fired)
			}
		}
		t.Fatal("schedule not listed")
		return 0
	}

	cos := newCoordinators(1)
	run(cos, true)
	s, err := patterns.Repeat(ctx, b.c, name, client.Spec{Args: Tick{}, Opts: &client.EnqueueOpts{Queue: b.queue}}, every)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "2 slots", func() bool { return rec.distinct() >= 2 })

	// An outage of over four slots, then two coordinators start. The slot
	// that had passed last when they started fires; the ones before it are
	// skipped, not caught up. Coordinators that start late enough for the
	// slot after that one to come due first legitimately skip it as well,
	// which tells nothing about the rule: the outage is then repeated.
	const rounds = 5
	for round := 1; ; round++ {
		run(cos, false)
		// Let the worker run what the stopped coordinators fired.
		n := fired()
		testenv.Eventually(t, 20*time.Second, "the fired slots to run", func() bool { return rec.distinct() >= n })
		before := rec.slots(t, b.queue, name)
		last := before[len(before)-1]
		cos = newCoordinators(2)
		// Wait, by Redis' clock, until four more slots have passed unserved,
		// and on to an eighth into the next, so that the slot just passed
		// is the latest due when the coordinators start.
		testenv.Eventually(t, 20*time.Second, "four slots to pass", func() bool {
			now := redisMs()
			in := (now - last) % ms
			return now > last+5*ms && in >= ms/8 && in < ms/4
		})
		restart := redisMs()
		missed := restart - (restart-last)%ms // the latest slot passed at the restart
		run(cos, true)
		testenv.Eventually(t, 20*time.Second, "a slot after the restart", func() bool { return rec.distinct() > len(before) })
		first := rec.slots(t, b.queue, name)[len(before)]
		// The Redis time it fired at: its stream entry's.
		st, err := store.State(ctx, b.env.RDB, keys.ForQueue(b.queue), "r."+name+"."+strconv.FormatInt(first, 10), "")
		if err != nil {
			t.Fatal(err)
		}
		at, err := strconv.ParseInt(strings.SplitN(st.EntryID, "-", 2)[0], 10, 64)
		if err != nil {
			t.Fatalf("slot %d: entry id %q: %v", first, st.EntryID, err)
		}
		if first < missed {
			t.Fatalf("the first slot after the restart, %d, is older than %d, the latest passed at the restart (%d): missed slots were caught up", first, missed, restart)
		}
		if at < missed+ms {
			// Fired before the next slot came due: the latest passed then
			// was the missed one.
			if first != missed {
				t.Errorf("the missed slot did not fire: the coordinators fired slot %d at %d, after slot %d passed at the restart (%d)", first, at, missed, restart)
			}
			t.Logf("round %d: slot %d, passed at the restart at %d, fired at %d", round, missed, restart, at)
			break
		}
		t.Logf("round %d: the coordinators first fired at %d, after slot %d too had come due; the outage is repeated", round, at, missed+ms)
		if round == rounds {
			t.Fatalf("in %d outages the coordinators never fired before the slot after the missed one came due: the rule went untested", rounds)
		}
	}
	// And the schedule goes on.
	more := rec.distinct() + 1
	testenv.Eventually(t, 20*time.Second, "a slot more", func() bool { return rec.distinct() >= more })
	if _, err := patterns.RemoveRepeat(ctx, b.c, name); err != nil {
		t.Fatal(err)
	}
	for _, slot := range rec.slots(t, b.queue, name) {
		if (slot-s.Next().UnixMilli())%ms != 0 {
			t.Errorf("slot %d off the grid", slot)
		}
	}
}

func TestRepeatBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	ok := client.Spec{Args: Tick{}, Opts: &client.EnqueueOpts{Queue: b.queue}}
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"bad name", func() error { _, err := patterns.Repeat(ctx, b.c, "a b", ok, time.Second); return err }, `repeat name "a b"`},
		{"long name", func() error {
			_, err := patterns.Repeat(ctx, b.c, strings.Repeat("x", 105), ok, time.Second)
			return err
		}, "limit is 104"},
		{"no interval", func() error { _, err := patterns.Repeat(ctx, b.c, "x", ok, 0); return err }, "interval is 0s"},
		{"nil args", func() error { _, err := patterns.Repeat(ctx, b.c, "x", client.Spec{}, time.Second); return err }, "spec.Args is nil"},
		{"id", func() error {
			_, err := patterns.Repeat(ctx, b.c, "x", client.Spec{Args: Tick{}, Opts: &client.EnqueueOpts{ID: "a"}}, time.Second)
			return err
		}, "EnqueueOpts.ID"},
		{"deadline", func() error {
			_, err := patterns.Repeat(ctx, b.c, "x", client.Spec{Args: Tick{}, Opts: &client.EnqueueOpts{Deadline: time.Now()}}, time.Second)
			return err
		}, "EnqueueOpts.Deadline"},
		{"delay", func() error {
			_, err := patterns.Repeat(ctx, b.c, "x", client.Spec{Args: Tick{}, Opts: &client.EnqueueOpts{Delay: time.Second}}, time.Second)
			return err
		}, "ProcessAt or Delay"},
		{"bad queue", func() error {
			_, err := patterns.Repeat(ctx, b.c, "x", client.Spec{Args: Tick{}, Opts: &client.EnqueueOpts{Queue: "a/b"}}, time.Second)
			return err
		}, "EnqueueOpts.Queue"},
		{"bad cron", func() error { _, err := patterns.RepeatCron(ctx, b.c, "x", ok, "61 * * * *", nil); return err }, "minute 61"},
		{"local zone", func() error {
			_, err := patterns.RepeatCron(ctx, b.c, "x", ok, "@daily", &patterns.CronOpts{Location: time.FixedZone("", 3600)})
			return err
		}, "IANA name"},
		{"remove bad name", func() error { _, err := patterns.RemoveRepeat(ctx, b.c, ""); return err }, "repeat name is empty"},
	} {
		err := tc.call()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
	}
	if infos, err := patterns.Repeats(ctx, b.c); err != nil {
		t.Fatal(err)
	} else {
		for _, in := range infos {
			if in.Name == "x" {
				t.Errorf("a refused declaration left a schedule: %+v", in)
			}
		}
	}
}

// isolatedDB is this package's database for testenv.IsolatedRedis.
const isolatedDB = 9

// MapTick has a map in its args: it must encode the same every time for a
// declaration to count as unchanged.
type MapTick struct{ M map[string]string }

func (MapTick) Kind() string { return "maptick" }

func TestRepeatDeclareWithMapArgs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	name := "map-" + b.queue[len(b.queue)-8:]
	m := map[string]string{}
	for i := 0; i < 20; i++ {
		m["k"+strconv.Itoa(i)] = strconv.Itoa(i)
	}
	for i := 0; i < 10; i++ {
		s, err := patterns.Repeat(ctx, b.c, name, client.Spec{Args: MapTick{M: m}, Opts: &client.EnqueueOpts{Queue: b.queue}}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && (s.Created() || s.Updated()) {
			t.Fatalf("declaration %d of the same map args: created %v updated %v", i, s.Created(), s.Updated())
		}
	}
	if _, err := patterns.RemoveRepeat(ctx, b.c, name); err != nil {
		t.Fatal(err)
	}
}

// Declarations into two queues and removals of one name, racing: at rest
// there is one schedule, named by the index, or none.
func TestRepeatDeclareRemoveRaces(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	name := "race-" + b.queue[len(b.queue)-8:]
	qa, qb := b.queue+"-a", b.queue+"-b"
	for round := 0; round < 30; round++ {
		var wg sync.WaitGroup
		for _, f := range []func() error{
			func() error {
				_, err := patterns.Repeat(ctx, b.c, name, client.Spec{Args: Tick{}, Opts: &client.EnqueueOpts{Queue: qa}}, time.Hour)
				return err
			},
			func() error {
				_, err := patterns.Repeat(ctx, b.c, name, client.Spec{Args: Tick{}, Opts: &client.EnqueueOpts{Queue: qb}}, time.Hour)
				return err
			},
			func() error {
				if round%3 != 0 {
					return nil
				}
				_, err := patterns.RemoveRepeat(ctx, b.c, name)
				return err
			},
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f(); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		idx, err := b.env.RDB.HGet(ctx, keys.RepeatIndex, name).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
		var defs []string
		for _, qn := range []string{qa, qb} {
			q := keys.ForQueue(qn)
			tok, err := b.env.RDB.HGet(ctx, q.Repeat(name), "tok").Result()
			inSet, _ := b.env.RDB.ZScore(ctx, q.Repeats(), name).Result()
			if err == nil {
				defs = append(defs, qn+"|"+tok)
			} else if inSet != 0 {
				t.Errorf("round %d: %s lists the schedule without a definition", round, qn)
			}
		}
		switch {
		case idx == "" && len(defs) != 0:
			t.Fatalf("round %d: unindexed definitions %v", round, defs)
		case idx != "" && (len(defs) != 1 || defs[0] != idx):
			t.Fatalf("round %d: index %q, definitions %v", round, idx, defs)
		}
	}
	if _, err := patterns.RemoveRepeat(ctx, b.c, name); err != nil {
		t.Fatal(err)
	}
}

// A definition the index does not name (its declarer died between the two
// writes) is removed by housekeeping once it is older than a minute.
func TestRepeatOrphanRemoved(t *testing.T) {
	t.Parallel()
	m, rdb, c := clocked(t, time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC))
	ctx := ctxT(t)
	for _, n := range []string{"kept", "orphan"} {
		if _, err := patterns.Repeat(ctx, c, n, client.Spec{Args: Tick{}, Opts: &client.EnqueueOpts{Queue: "q"}}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.HDel(ctx, keys.RepeatIndex, "orphan").Err(); err != nil {
		t.Fatal(err)
	}
	co, err := coordinator.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := co.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	q := keys.ForQueue("q")
	if n, _ := rdb.Exists(ctx, q.Repeat("orphan")).Result(); n != 1 {
		t.Fatal("a fresh unindexed definition was removed (it may be mid-declaration)")
	}
	m.SetTime(time.Date(2026, 1, 1, 10, 2, 0, 0, time.UTC))
	if err := co.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.Exists(ctx, q.Repeat("orphan"), q.Repeat("kept")).Result(); n != 1 {
		t.Fatalf("%d of the two definitions left, want only the indexed one", n)
	}
	if s, _ := rdb.ZScore(ctx, q.Repeats(), "orphan").Result(); s != 0 {
		t.Error("the orphan is still in the repeat set")
	}
}

// clocked returns a miniredis of t's own whose clock stands at at, a Redis
// client of it and a client.
func clocked(t *testing.T, at time.Time) (*miniredis.Miniredis, *redis.Client, *client.Client) {
	t.Helper()
	m := miniredis.RunT(t)
	m.SetTime(at)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return m, rdb, c
}
