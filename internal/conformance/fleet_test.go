package conformance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// The fleet's table: what a worker and a coordinator write on their own, run
// cleanly and then with the reply of a chosen call dropped once and twice (go-redis
// resends it), the end state compared with the clean run's as in
// RunTable. A worker's calls depend on timing (its reads, heartbeats and
// reclaims run on tickers), so each row names the calls it faults and which
// occurrences, and waits on conditions, never on time. The end state adds
// what the handlers saw: how many times they ran, each run's attempt and
// delivery count, and how each ended (a lease kept or lost).

// Databases of a real server for the fleet's table: one shared by the
// worker rows, and one per lane of the coordinator rows (a coordinator
// serves every queue of its Redis, so a run needs the Redis to itself).
const (
	fleetDB   = 13
	fleetOwn1 = 14
	fleetOwn2 = 15
)

// FleetJob is the task of the fleet's table; Mode says what its handler does.
type FleetJob struct{ Mode string }

func (FleetJob) Kind() string { return "fleetjob" }

// Handler modes.
const (
	modeOK        = "ok"        // succeeds
	modeFailOnce  = "fail-once" // fails its first attempt (retried at once), then succeeds
	modePermanent = "permanent" // fails for good: dead-lettered
	modeBlock     = "block"     // runs until its ctx ends
	modeHold      = "hold"      // runs until the row releases it (or its ctx ends)
)

// FleetOther is a kind no worker of the table handles.
type FleetOther struct{}

func (FleetOther) Kind() string { return "fleetother" }

// fleetRow is one row of the fleet's table.
type fleetRow struct {
	Name string
	// Own gives each run a Redis of its own (coordinator rows).
	Own   bool
	Setup func(f *fleetRun)
	Op    func(f *fleetRun) string
	// Fault picks the calls of the clean run to fault (name as
	// Run.callName gives it, occurrence from 1); nil: every writing call,
	// its first maxNth occurrences and its last.
	Fault func(name string, nth int) bool
	// OwnDrops is how many replies Op drops itself, in every run, besides
	// the faulted call's.
	OwnDrops int
}

// fleetRun is a run of a fleet row: the harness' Run and what its handlers
// saw.
type fleetRun struct {
	*Run
	direct *client.Client // on the Redis itself, for waits: no fault touches it

	// fault and faultTimes name the call whose reply a faulted run drops,
	// and how many times ("" in a clean run).
	fault      string
	faultTimes int

	runs    atomic.Int32
	mu      sync.Mutex
	notes   []string
	started chan struct{} // closed when a blocking handler started
	once    sync.Once
	release chan struct{} // closed by the row to end a holding handler
}

func (f *fleetRun) note(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notes = append(f.notes, s)
}

// handle is the table's handler: it notes each run.
func (f *fleetRun) handle(ctx context.Context, a FleetJob) (int, error) {
	f.runs.Add(1)
	t, _ := worker.TaskFromContext(ctx)
	end := func(err error) error {
		f.note(fmt.Sprintf("run: %s attempt %d deliveries %d: %v (ctx: %v)", a.Mode, t.Attempt, t.Deliveries, err, context.Cause(ctx)))
		return err
	}
	switch a.Mode {
	case modeOK:
	case modeFailOnce:
		if t.Attempt == 1 {
			return 0, end(worker.RetryAfter(time.Millisecond, errors.New("first attempt fails")))
		}
	case modePermanent:
		return 0, end(worker.Permanent(errors.New("fails for good")))
	case modeBlock:
		f.once.Do(func() { close(f.started) })
		<-ctx.Done()
		return 0, end(context.Cause(ctx))
	case modeHold:
		f.once.Do(func() { close(f.started) })
		select {
		case <-f.release:
		case <-ctx.Done():
			return 0, end(context.Cause(ctx))
		}
	}
	return 1, end(nil)
}

// enqueueJob adds a task to r.Q through the proxy (in a Setup: no rule is
// set yet) and tracks it.
func (f *fleetRun) enqueueJob(args client.Args, opts *client.EnqueueOpts) *client.Handle {
	f.T.Helper()
	if opts == nil {
		opts = &client.EnqueueOpts{}
	}
	opts.Queue = f.Q
	h, err := f.C.Enqueue(f.Ctx, args, opts)
	f.Must(err)
	f.Track(h)
	return h
}

// startWorker starts a worker of r.Q through the proxy with the table's
// handler (FleetJob only).
func (f *fleetRun) startWorker(cfg worker.Config) *worker.Worker {
	f.T.Helper()
	cfg.Queues = map[string]int{f.Q: 1}
	cfg.BlockTimeout = 20 * time.Millisecond
	cfg.Backoff = func(int) time.Duration { return time.Millisecond }
	cfg.Logger = quiet
	w, err := worker.New(context.Background(), f.RDB, &cfg)
	f.Must(err)
	worker.Handle(w, f.handle)
	// A batch of the client table's items (bkItem): each doubled.
	worker.HandleBatch(w, func(ctx context.Context, items []bkItem) ([]int, error) {
		f.runs.Add(1)
		out := make([]int, len(items))
		for i, it := range items {
			out[i] = 2 * int(it)
		}
		f.note(fmt.Sprintf("batch of %d items", len(items)))
		return out, nil
	})
	f.Must(w.Start(f.Ctx))
	// Stop is idempotent: this only stops a worker a failed run left.
	f.T.Cleanup(func() { f.stopWorker(w, true) })
	return w
}

// stopWorker stops w (cancelling its handlers when cancel is set).
func (f *fleetRun) stopWorker(w *worker.Worker, cancel bool) {
	f.T.Helper()
	ctx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	stop := w.Stop
	if cancel {
		stop = w.StopAndCancel
	}
	if err := stop(ctx); err != nil {
		f.T.Errorf("stop the worker: %v", err)
	}
}

// waitState waits until h's task is in state st (read on the Redis itself).
func (f *fleetRun) waitState(h *client.Handle, st client.State) {
	f.T.Helper()
	dh, err := f.direct.Task(h.ID())
	f.Must(err)
	testenv.Eventually(f.T, 20*time.Second, fmt.Sprintf("task %s to be %s", h.ID(), st), func() bool {
		got, _ := dh.State(f.Ctx)
		return got == st
	})
}

// waitOutboxEmpty waits until the drains deleted every outbox entry of
// r.Q (read on the Redis itself).
func (f *fleetRun) waitOutboxEmpty() {
	f.T.Helper()
	q := keys.ForQueue(f.Q)
	testenv.Eventually(f.T, 20*time.Second, "the outbox drained", func() bool {
		n, err := f.Env.RDB.XLen(f.Ctx, q.Outbox()).Result()
		return err == nil && n == 0
	})
}

// waitStarted waits until a blocking handler runs.
func (f *fleetRun) waitStarted() {
	f.T.Helper()
	select {
	case <-f.started:
	case <-time.After(20 * time.Second):
		f.T.Fatal("timed out waiting for the handler to start")
	}
}

// count is how many commands named name (as Run.callName gives it) the
// proxy forwarded in this run.
func (f *fleetRun) count(name string) int {
	n := 0
	for _, c := range f.Proxy.Commands() {
		if f.callName(c) == name {
			n++
		}
	}
	return n
}

// redisNow is Redis' clock in ms.
func (f *fleetRun) redisNow() int64 {
	f.T.Helper()
	t, err := f.Env.RDB.Time(f.Ctx).Result()
	f.Must(err)
	return t.UnixMilli()
}

// waitDue waits until every scheduled task and repeat slot of r.Q is due
// by Redis' clock.
func (f *fleetRun) waitDue() {
	f.T.Helper()
	q := keys.ForQueue(f.Q)
	var last int64
	for _, k := range []string{q.Scheduled(), q.Repeats()} {
		zs, err := f.Env.RDB.ZRangeWithScores(f.Ctx, k, -1, -1).Result()
		f.Must(err)
		if len(zs) > 0 {
			last = max(last, int64(zs[0].Score))
		}
	}
	if last == 0 {
		f.T.Fatal("nothing is scheduled")
	}
	testenv.Eventually(f.T, 20*time.Second, "the scheduled tasks to come due", func() bool { return f.redisNow() >= last })
}

// coordinator returns a coordinator of the run's Redis through the proxy.
func (f *fleetRun) coordinator(cfg coordinator.Config) *coordinator.Coordinator {
	f.T.Helper()
	cfg.Logger = quiet
	co, err := coordinator.New(context.Background(), f.RDB, &cfg)
	f.Must(err)
	return co
}

// runOnce runs every duty of a coordinator once.
func (f *fleetRun) runOnce(cfg coordinator.Config) string {
	return Answer("", f.coordinator(cfg).RunOnce(f.Ctx))
}

// state is the run's end state: the harness' (Run.State) and the handlers'
// runs.
func (f *fleetRun) state(answer string) string {
	f.T.Helper()
	f.mu.Lock()
	notes := append([]string(nil), f.notes...)
	f.mu.Unlock()
	sort.Strings(notes)
	f.statePart = append(f.statePart, fmt.Sprintf("handler runs: %d", f.runs.Load()))
	f.statePart = append(f.statePart, notes...)
	// A random id with ten digits in a row comes out of Run.normalize in
	// pieces (<r><n><r>, <n>c2): one placeholder, as for any other.
	return splitID.ReplaceAllStringFunc(f.State(answer), func(m string) string {
		if m == "<r>" || m == "<n>" {
			return m
		}
		return "<r>"
	})
}

var splitID = regexp.MustCompile(`[0-9a-z]*(?:(?:<r>|<n>)[0-9a-z]*)+`)

// fleetLane is a lane and a client of its Redis that goes round the proxy,
// for waits: no fault touches it.
type fleetLane struct {
	*lane
	direct *client.Client
}

func newFleetLane(t *testing.T, env *testenv.Env) *fleetLane {
	t.Helper()
	direct, err := client.New(context.Background(), env.RDB, &client.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = direct.Close() })
	return &fleetLane{lane: newLane(t, env), direct: direct}
}

// fleetLanes hands out lanes: lanes on one Redis for worker rows, and for
// coordinator rows lanes each on a Redis of its own, flushed before each
// run (its scripts stay loaded: loading them costs more than a run).
type fleetLanes struct {
	shared chan *fleetLane
	own    chan *fleetLane
}

func newFleetLanes(t *testing.T) *fleetLanes {
	env := testenv.IsolatedRedis(t, fleetDB)
	ls := &fleetLanes{shared: make(chan *fleetLane, parallel), own: make(chan *fleetLane, parallel)}
	for range parallel {
		ls.shared <- newFleetLane(t, env)
	}
	if ownDBs() {
		// Databases of the real server.
		ls.own <- newFleetLane(t, testenv.IsolatedRedis(t, fleetOwn1))
		ls.own <- newFleetLane(t, testenv.IsolatedRedis(t, fleetOwn2))
	} else {
		// A miniredis each (also on the cluster pass).
		for range parallel {
			ls.own <- newFleetLane(t, testenv.IsolatedRedis(t, 0))
		}
	}
	return ls
}

// ownDBs reports whether IsolatedRedis gives databases of a real server
// (else a new miniredis each time).
func ownDBs() bool {
	return os.Getenv(testenv.EnvAddr) != "" && os.Getenv(testenv.EnvCluster) == ""
}

// in runs fn as subtest name on a lane fit for row.
func (ls *fleetLanes) in(t *testing.T, row fleetRow, name string, fn func(f *fleetRun)) {
	pool := ls.shared
	if row.Own {
		pool = ls.own
	}
	l := <-pool
	defer func() { pool <- l }()
	t.Run(name, func(t *testing.T) {
		r := newRun(t, l.lane)
		if row.Own {
			r.Must(l.env.RDB.FlushDB(r.Ctx).Err())
		}
		fn(&fleetRun{Run: r, direct: l.direct, started: make(chan struct{}), release: make(chan struct{})})
	})
}

// runFleet runs the rows as RunTable does: cleanly twice (the two states
// must be equal), then once per picked call of the clean run and drop count
// (1 and 2), each state compared with the clean one.
func runFleet(t *testing.T, rows []fleetRow) {
	ls := newFleetLanes(t)
	for _, row := range rows {
		t.Run(row.Name, func(t *testing.T) {
			once := func(f *fleetRun) string {
				if row.Setup != nil {
					row.Setup(f)
				}
				f.Proxy.ResetCommands()
				return row.Op(f)
			}
			var clean, again string
			var calls []call
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				ls.in(t, row, "clean", func(f *fleetRun) {
					ans := once(f)
					calls = f.writingCalls(f.Proxy.Commands(), nil)
					clean = f.state(ans)
				})
			}()
			go func() {
				defer wg.Done()
				ls.in(t, row, "clean-again", func(f *fleetRun) { again = f.state(once(f)) })
			}()
			wg.Wait()
			if t.Failed() {
				return
			}
			if again != clean {
				t.Fatalf("two clean runs differ:\n%s\n%s\n%s", diff(clean, again), clean, again)
			}
			last := map[string]int{}
			for _, c := range calls {
				last[c.name] = c.nth
			}
			type fault struct {
				call
				times int
			}
			var faults []fault
			for _, c := range calls {
				pick := c.nth <= maxNth || c.nth == last[c.name]
				if row.Fault != nil {
					pick = row.Fault(c.name, c.nth)
				}
				if pick {
					faults = append(faults, fault{c, 1}, fault{c, 2})
				}
			}
			if len(faults) == 0 {
				t.Fatalf("no call of the clean run to fault among %v", calls)
			}
			next := make(chan fault)
			for range parallel {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for fl := range next {
						ls.in(t, row, fmt.Sprintf("%s#%d/x%d", fl.name, fl.nth, fl.times), func(f *fleetRun) {
							if row.Setup != nil {
								row.Setup(f)
							}
							f.Proxy.ResetCommands()
							f.Proxy.DropReply(func(cmd testenv.Command) bool { return f.callName(cmd) == fl.name }, fl.nth, fl.times)
							f.fault, f.faultTimes = fl.name, fl.times
							ans := row.Op(f)
							if n := f.Dropped(); n != fl.times+row.OwnDrops {
								f.T.Errorf("%d replies dropped, want %d: the call was not made as in the clean run, or go-redis did not resend it (answer: %s)", n, fl.times+row.OwnDrops, f.normalize(ans))
							}
							f.Proxy.ClearRules()
							if got := f.state(ans); got != clean {
								f.T.Errorf("end state differs from the clean run's (- clean, + faulted):\n%s", diff(clean, got))
							}
						})
					}
				}()
			}
			for _, fl := range faults {
				next <- fl
			}
			close(next)
			wg.Wait()
		})
	}
}

// only picks the first upTo occurrences of the calls named names.
func only(upTo int, names ...string) func(string, int) bool {
	return func(name string, nth int) bool {
		for _, n := range names {
			if name == n && nth <= upTo {
				return true
			}
		}
		return false
	}
}

// completeAndActivate picks the completions and the first activation: a
// continuation may be activated twice, by the completer's drain and by the
// forward loop's sweep (both read the outbox before either deletes from
// it; activate.lua is idempotent), so a second activation is not in every
// run.
func completeAndActivate(name string, nth int) bool {
	return name == callComplete && nth <= maxNth || name == callActivate && nth == 1
}

const (
	callComplete  = "EVALSHA complete"
	callHeartbeat = "EVALSHA heartbeat"
	callReclaim   = "EVALSHA reclaim"
	callForward   = "EVALSHA forward"
	callActivate  = "EVALSHA activate"
	callRepFire   = "EVALSHA repfire"
)

// workerRows are the worker's writes: each outcome its completion records
// (success, failure and retry, dead letter, a continuation and a join
// started, cancel, park of a kind it has no handler for, hand-back at
// shutdown), its heartbeats and its takeover of an expired lease.
func workerRows() []fleetRow {
	ran := func(st client.State, cfg worker.Config) func(f *fleetRun) string {
		return func(f *fleetRun) string {
			w := f.startWorker(cfg)
			f.waitState(f.H[0], st)
			// A drain deletes the outbox entries it applied at the end of
			// its round: a continuation it started may end before that
			// (seen on a loaded machine), and the end state is read once
			// the round is over.
			f.waitOutboxEmpty()
			f.stopWorker(w, false)
			return ""
		}
	}
	enq := func(mode string) func(f *fleetRun) {
		return func(f *fleetRun) { f.H = append(f.H, f.enqueueJob(FleetJob{Mode: mode}, nil)) }
	}
	return []fleetRow{
		{Name: "complete/success", Setup: enq(modeOK), Op: ran(client.StateSucceeded, worker.Config{}),
			Fault: only(maxNth, callComplete)},
		{Name: "complete/failure-retry", Setup: enq(modeFailOnce), Op: ran(client.StateSucceeded, worker.Config{}),
			Fault: only(maxNth, callComplete)},
		{Name: "complete/dead-letter", Setup: enq(modePermanent), Op: ran(client.StateDead, worker.Config{}),
			Fault: only(maxNth, callComplete)},
		{Name: "complete/continuation", Setup: func(f *fleetRun) {
			h := f.enqueueJob(FleetJob{Mode: modeOK}, nil)
			next, err := h.ContinueWith(f.Ctx, FleetJob{Mode: modeOK}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{Queue: f.Q}})
			f.Must(err)
			f.Track(next)
			f.H = append(f.H, next)
		}, Op: ran(client.StateSucceeded, worker.Config{}), Fault: completeAndActivate},
		{Name: "complete/fork-join", Setup: func(f *fleetRun) {
			g, err := patterns.ForkJoin(f.Ctx, f.C, f.specsOf(2), &client.Spec{Args: FleetJob{Mode: modeOK}, Opts: &client.EnqueueOpts{Queue: f.Q}}, nil)
			f.Must(err)
			f.TrackGroup(g)
			join, err := g.Join(f.Ctx)
			f.Must(err)
			f.Track(join)
			f.H = append(f.H, join)
		}, Op: ran(client.StateSucceeded, worker.Config{Concurrency: 1}), // one outcome per call
			Fault: completeAndActivate},
		{Name: "complete/batch", Setup: func(f *fleetRun) {
			// A full batch of two items: its task waits in the stream.
			b, err := patterns.NewBatch[bkItem, int](f.C, &patterns.BatchOpts{MaxSize: 2, MaxWait: time.Hour, Queue: f.Q})
			f.Must(err)
			for i := range 2 {
				h, err := b.Append(f.Ctx, bkItem(i+1))
				f.Must(err)
				f.Track(h)
				f.H = append(f.H, h)
			}
		}, Op: func(f *fleetRun) string {
			w := f.startWorker(worker.Config{})
			for _, h := range f.H {
				f.waitState(h, client.StateSucceeded)
			}
			f.waitOutboxEmpty()
			f.stopWorker(w, false)
			return ""
		}, Fault: only(maxNth, "EVALSHA batchend")},
		{Name: "complete/cancel", Setup: enq(modeBlock), Op: func(f *fleetRun) string {
			w := f.startWorker(worker.Config{})
			f.waitStarted()
			st, err := f.task(f.H[0]).Cancel(f.Ctx)
			f.waitState(f.H[0], client.StateCancelled)
			f.stopWorker(w, false)
			return Answer(st, err)
		}, Fault: only(maxNth, callComplete)},
		{Name: "complete/park-unknown-kind", Setup: func(f *fleetRun) {
			f.H = append(f.H, f.enqueueJob(FleetOther{}, nil))
		}, Op: func(f *fleetRun) string {
			// Parked for 250 ms (parkDelay): the worker stops before it
			// would take the task again.
			w := f.startWorker(worker.Config{})
			f.waitState(f.H[0], client.StateScheduled)
			f.stopWorker(w, false)
			parks := map[string]bool{}
			for _, c := range f.Proxy.Commands() {
				if c.Name == "EVALSHA" && f.callName(c) == callComplete {
					parks[strings.Join(c.Args, " ")] = true // a resend has the same
				}
			}
			if len(parks) != 1 {
				f.T.Fatalf("the worker parked the task %d times: it took it again after 250 ms, before it stopped", len(parks))
			}
			return ""
		}, Fault: only(1, callComplete)},
		{Name: "complete/hand-back-at-stop", Setup: enq(modeBlock), Op: func(f *fleetRun) string {
			// One slot, held by the handler: no read is in flight as the
			// worker stops, to take the handed-back task again.
			w := f.startWorker(worker.Config{Concurrency: 1})
			f.waitStarted()
			f.stopWorker(w, true)
			return ""
		}, Fault: only(1, callComplete)},
		{Name: "heartbeat", Setup: enq(modeHold), Op: func(f *fleetRun) string {
			// A lease of 8s: a heartbeat every 2s, the handler cancelled
			// 6.4s after the last one that got through (a starved CI
			// machine once held a heartbeat back for the 3.2s of a 4s
			// lease, and the lease lapsed, in the clean runs' terms a
			// different end). It runs until the faulted heartbeats and
			// one more went through.
			w := f.startWorker(worker.Config{Lease: 8 * time.Second, Concurrency: 1})
			f.waitStarted()
			testenv.Eventually(f.T, 60*time.Second, "heartbeats", func() bool { return f.count(callHeartbeat) >= 4 })
			close(f.release)
			f.waitState(f.H[0], client.StateSucceeded)
			f.stopWorker(w, false)
			return ""
		}, Fault: only(2, callHeartbeat)},
		{Name: "reclaim", Setup: func(f *fleetRun) {
			// A task delivered to a worker that died an hour ago.
			f.H = append(f.H, f.enqueueJob(FleetJob{Mode: modeOK}, nil))
			q := keys.ForQueue(f.Q)
			f.Must(store.EnsureGroup(f.Ctx, f.Env.RDB, q))
			gone := "gone-" + f.U
			xs, err := f.Env.RDB.XReadGroup(f.Ctx, &redis.XReadGroupArgs{Group: keys.Group, Consumer: gone, Streams: []string{q.Stream(), ">"}, Count: 1, Block: -1}).Result()
			f.Must(err)
			if len(xs) != 1 || len(xs[0].Messages) != 1 {
				f.T.Fatalf("read %v, want the one entry", xs)
			}
			f.Must(f.Env.RDB.Do(f.Ctx, "XCLAIM", q.Stream(), keys.Group, gone, 0, xs[0].Messages[0].ID, "IDLE", time.Hour.Milliseconds(), "JUSTID").Err())
		}, Op: func(f *fleetRun) string {
			// Its first reclaim, as it starts, takes the task over.
			w := f.startWorker(worker.Config{Lease: 2 * time.Second})
			f.waitState(f.H[0], client.StateSucceeded)
			f.stopWorker(w, false)
			return ""
		}, Fault: only(1, callReclaim)},
	}
}

// coordinatorRows are the coordinator's writes: delayed tasks and Spread's
// members moved into their queue when due, a repeat slot fired, and
// housekeeping (RunOnce, every duty once), and the housekeeping claim of
// its loop.
func coordinatorRows() []fleetRow {
	return []fleetRow{
		{Name: "coordinator/delayed", Own: true, Setup: func(f *fleetRun) {
			f.enqueueJob(FleetJob{Mode: modeOK}, &client.EnqueueOpts{Delay: 500 * time.Millisecond})
			f.enqueueJob(FleetJob{Mode: modeOK}, &client.EnqueueOpts{Delay: 600 * time.Millisecond})
			f.waitDue()
		}, Op: func(f *fleetRun) string { return f.runOnce(coordinator.Config{}) }},
		{Name: "coordinator/spread", Own: true, Setup: func(f *fleetRun) {
			g, err := patterns.Spread(f.Ctx, f.C, f.specsOf(3), 900*time.Millisecond, nil)
			f.Must(err)
			f.TrackGroup(g)
			f.waitDue()
		}, Op: func(f *fleetRun) string { return f.runOnce(coordinator.Config{}) },
			// Its other calls are those of coordinator/delayed.
			Fault: only(maxNth, callForward)},
		{Name: "coordinator/repeat-fire", Own: true, Setup: func(f *fleetRun) {
			// Its first slot 3s from now: the run fires that one slot,
			// well before the next.
			_, err := patterns.Repeat(f.Ctx, f.C, "rep-"+f.U, client.Spec{Args: FleetJob{Mode: modeOK}, Opts: &client.EnqueueOpts{Queue: f.Q}}, 3*time.Second)
			f.Must(err)
			f.waitDue()
		}, Op: func(f *fleetRun) string { return f.runOnce(coordinator.Config{}) },
			// Its other calls are those of coordinator/delayed.
			Fault: only(maxNth, callRepFire)},
		{Name: "coordinator/housekeep", Own: true, Setup: func(f *fleetRun) {
			// Ended tasks (stream history to trim), two dead letters (one
			// over the cap: the older one goes), and a worker's consumer
			// idle past ConsumerIdle, holding nothing.
			w, err := worker.New(context.Background(), f.Env.RDB, &worker.Config{Queues: map[string]int{f.Q: 1}, BlockTimeout: 20 * time.Millisecond, Logger: quiet})
			f.Must(err)
			worker.Handle(w, f.handle)
			f.Must(w.Start(f.Ctx))
			f.waitState(f.enqueueJob(FleetJob{Mode: modeOK}, nil), client.StateSucceeded)
			f.waitState(f.enqueueJob(FleetJob{Mode: modePermanent}, nil), client.StateDead)
			f.waitState(f.enqueueJob(FleetJob{Mode: modePermanent}, nil), client.StateDead)
			f.stopWorker(w, false)
			if f.Env.Mini != nil {
				return // miniredis keeps no idle time for a consumer
			}
			testenv.Eventually(f.T, 20*time.Second, "the worker's consumer to be idle for 1s", func() bool {
				cs, err := f.Env.RDB.XInfoConsumers(f.Ctx, keys.ForQueue(f.Q).Stream(), keys.Group).Result()
				f.Must(err)
				return len(cs) == 1 && cs[0].Idle > 1100*time.Millisecond
			})
		}, Op: func(f *fleetRun) string {
			idle := time.Second
			if f.Env.Mini != nil {
				// miniredis' consumer idle times follow the wall clock
				// from the worker's last read: whether a run removes the
				// consumer would depend on how long it took. No removal
				// there (the real-Redis pass checks it).
				idle = time.Hour
			}
			return f.runOnce(coordinator.Config{DeadLetterCap: 1, ConsumerIdle: idle})
		}, Fault: only(maxNth, "EVALSHA housekeep", "EVALSHA purgedead")}, // the others: coordinator/delayed
		{Name: "coordinator/housekeep-claim", Own: true, Op: func(f *fleetRun) string {
			// The loop's first interval: its claim taken, then its
			// housekeeping (a sweep of every queue, none here), seen as
			// its read of the queue registry. The claims of intervals are
			// told apart by their tokens (a resend carries the same). It
			// stops after housekeeping or three intervals' claims
			// (miniredis expires the claim only when told to: there the
			// claim of the first interval is the only one that can win).
			co := f.coordinator(coordinator.Config{HousekeepInterval: 200 * time.Millisecond})
			f.Must(co.Start(f.Ctx))
			progress := func() (claims int, swept bool) {
				tokens := map[string]bool{}
				for _, c := range f.Proxy.Commands() {
					if c.Name == "SMEMBERS" && c.Arg(0) == keys.Queues {
						return len(tokens), true
					}
					// claim.lua: sha, 1 key (the claim), token, ms.
					if c.String() == "EVALSHA claim" && c.Arg(2) == keys.HousekeepClaim {
						tokens[c.Arg(3)] = true
					}
				}
				return len(tokens), false
			}
			testenv.Eventually(f.T, 20*time.Second, "housekeeping", func() bool {
				n, swept := progress()
				return swept || n >= 3
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			f.Must(co.Stop(ctx))
			n, swept := progress()
			return fmt.Sprintf("intervals claimed: %d, housekeeping ran: %v", n, swept)
		}, Fault: only(1, "EVALSHA claim")},
	}
}

// specsOf is n tasks of r.Q.
func (f *fleetRun) specsOf(n int) []client.Spec {
	var out []client.Spec
	for range n {
		out = append(out, client.Spec{Args: FleetJob{Mode: modeOK}, Opts: &client.EnqueueOpts{Queue: f.Q}})
	}
	return out
}

// TestResendConformanceFleet is the resend conformance suite for the
// worker and the coordinator: each of their writing calls whose reply is
// lost is resent, and must leave the state a clean run leaves; a handler
// runs no more often than without the fault, a lease is kept.
func TestResendConformanceFleet(t *testing.T) {
	runFleet(t, append(append(append(append(workerRows(), limitFleetRows()...), fetchRows()...), coordinatorRows()...), registryRows()...))
}

const (
	callLimAcquire = "EVALSHA limacquire"
	callLimWait    = "EVALSHA limwait"
	callLimRelease = "EVALSHA limrelease"
	callWake       = "EVALSHA wake"
	callRead       = "XREADGROUP group"
	callAdopt      = "EVALSHA adopt"
)

// limitFleetRows are the writes of a fleet-wide limit (worker.Config's
// QueueLimits and KindLimits): taking a slot and giving it back, and a task that finds the
// limit full parked as a waiter, then woken by the release of the slot.
func limitFleetRows() []fleetRow {
	limited := func(f *fleetRun, cfg worker.Config) worker.Config {
		// A queue's limit, not the kind's: the runs of a row go at once
		// on one Redis, each in a queue of its own.
		cfg.QueueLimits = map[string]int{f.Q: 1}
		// A waiter whose wake-up is lost (a resent limrelease pops it
		// again and returns nothing) tries again after this.
		cfg.LimitWait = 2 * time.Second
		return cfg
	}
	return []fleetRow{
		{Name: "limit/acquire-release", Setup: func(f *fleetRun) {
			f.H = append(f.H, f.enqueueJob(FleetJob{Mode: modeOK}, nil))
		}, Op: func(f *fleetRun) string {
			w := f.startWorker(limited(f, worker.Config{}))
			f.waitState(f.H[0], client.StateSucceeded)
			f.stopWorker(w, false)
			return ""
		}, Fault: only(maxNth, callLimAcquire, callLimRelease)},
		{Name: "limit/park-wake", Setup: func(f *fleetRun) {
			f.H = append(f.H, f.enqueueJob(FleetJob{Mode: modeHold}, nil))
		}, Op: func(f *fleetRun) string {
			// The holding task takes the one slot; the second, enqueued
			// then, finds the limit full and waits in Redis until the
			// first ends and its release wakes it.
			w := f.startWorker(limited(f, worker.Config{Concurrency: 2}))
			f.waitStarted()
			h, err := f.C.Enqueue(f.Ctx, FleetJob{Mode: modeOK}, &client.EnqueueOpts{Queue: f.Q})
			f.Must(err)
			f.Track(h)
			f.waitState(h, client.StateScheduled)
			testenv.Eventually(f.T, 20*time.Second, "the parked task to wait on the limit", func() bool { return f.count(callLimWait) > 0 })
			close(f.release)
			f.waitState(f.H[0], client.StateSucceeded)
			f.waitState(h, client.StateSucceeded)
			f.stopWorker(w, false)
			return ""
		}, Fault: only(maxNth, callLimWait, callLimRelease, callWake)},
	}
}

// fetchRows are the worker's reads, which write too (XREADGROUP delivers
// entries to its consumer): a read whose reply is lost leaves its entries
// pending under the worker's consumer, where adopt.lua takes them up.
func fetchRows() []fleetRow {
	return []fleetRow{
		{Name: "fetch/lost-read", Setup: func(f *fleetRun) {
			f.H = append(f.H, f.enqueueJob(FleetJob{Mode: modeOK}, nil))
		}, Op: func(f *fleetRun) string {
			w := f.startWorker(worker.Config{})
			f.waitState(f.H[0], client.StateSucceeded)
			f.stopWorker(w, false)
			return ""
		}, Fault: only(1, callRead)},
		{Name: "fetch/adopt", Setup: func(f *fleetRun) {
			f.H = append(f.H, f.enqueueJob(FleetJob{Mode: modeOK}, nil))
		}, Op: func(f *fleetRun) string {
			// The first read's reply is lost in every run (and go-redis'
			// resend reads nothing new): the worker takes its entry up
			// with adopt.lua, whose reply the faulted runs drop.
			f.Proxy.DropReply(func(c testenv.Command) bool { return f.callName(c) == callRead }, 1, 1)
			w := f.startWorker(worker.Config{Lease: 2 * time.Second})
			f.waitState(f.H[0], client.StateSucceeded)
			f.stopWorker(w, false)
			return ""
		}, OwnDrops: 1, Fault: only(maxNth, callAdopt)},
	}
}
