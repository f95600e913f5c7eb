package conformance

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// aheadMs is how far past Redis' clock moveAhead sets a stream's last id:
// past any id a client chooses now, and within store.MaxAhead, so that the
// client still tries its own id (a stream further ahead sends it to
// enqueue.lua without trying).
const aheadMs = 8_000

// moveAhead makes q's stream's last id aheadMs past Redis' clock, leaving no
// entry (XDEL keeps the last id): Enqueue's id is refused, and it takes
// enqueue20.lua's fallback path.
func moveAhead(ctx context.Context, rdb redis.Cmdable, q string) error {
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		return err
	}
	s := keys.ForQueue(q).Stream()
	id := fmt.Sprintf("%d-0", now.UnixMilli()+aheadMs)
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: s, ID: id, Values: []string{"m", "x"}}).Err(); err != nil {
		return err
	}
	return rdb.XDel(ctx, s, id).Err()
}

// The rows of enqueue20.lua: Enqueue of an auto-keyed task on its fast path
// (one XADD under an id the client chose), on its fallback path (the
// stream is past any id the client chooses), and a task whose retention is
// shorter than the resend window (enqueue.lua's op marker).
func enqueue20Rows() []Row {
	enq := func(opts func(r *Run) *client.EnqueueOpts) func(r *Run) string {
		return func(r *Run) string {
			h, err := r.C.Enqueue(r.Ctx, Job{N: 1}, opts(r))
			r.Track(h)
			return Answer(HandleText(h), err)
		}
	}
	return []Row{
		{Name: "Enqueue20/fast", Op: enq(func(r *Run) *client.EnqueueOpts { return &client.EnqueueOpts{Queue: r.Q} })},
		{Name: "Enqueue20/fallback",
			Setup: func(r *Run) { r.Must(moveAhead(r.Ctx, r.Env.RDB, r.Q)) },
			Op:    enq(func(r *Run) *client.EnqueueOpts { return &client.EnqueueOpts{Queue: r.Q} })},
		// A fallback's marker is carried by the client's next call to the
		// queue (KEYS[5..] of enqueue20.lua), which cuts it short.
		{Name: "Enqueue20/after-fallback",
			Setup: func(r *Run) { r.Must(moveAhead(r.Ctx, r.Env.RDB, r.Q)) },
			Op: func(r *Run) string {
				var out []string
				for range 2 {
					h, err := r.C.Enqueue(r.Ctx, Job{N: 1}, &client.EnqueueOpts{Queue: r.Q})
					r.Track(h)
					out = append(out, Answer(HandleText(h), err))
				}
				return strings.Join(out, " ")
			}},
		// Every task auto-keyed: enqueue.lua's envelope-only form.
		{Name: "EnqueueMany/auto", Op: func(r *Run) string {
			hs, err := r.C.EnqueueMany(r.Ctx, r.specs(r.Q, 1, 2, 3))
			r.Track(hs...)
			out := make([]string, len(hs))
			for i, h := range hs {
				out[i] = HandleText(h)
			}
			return Answer(strings.Join(out, " "), err)
		}},
		{Name: "Enqueue20/short-retention", Op: enq(func(r *Run) *client.EnqueueOpts {
			return &client.EnqueueOpts{Queue: r.Q, Retention: time.Second}
		})},
	}
}

func TestResendConformanceEnqueue20(t *testing.T) {
	RunTable(t, enqueue20Rows())
}

// resendOne runs every enqueue20.lua call of the client it hooks 1+extra
// times (go-redis resending it after lost replies), with between run once,
// after the first run. It keeps the entry id of the calls (ARGV[1]).
type resendOne struct {
	rdb     redis.Cmdable // past the hook
	extra   int
	between func(id string)
	id      atomic.Value
}

func (*resendOne) DialHook(next redis.DialHook) redis.DialHook { return next }
func (*resendOne) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *resendOne) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		a := cmd.Args()
		if cmd.Name() != "evalsha" || len(a) < 8 || (a[1] != script.EnqueueOne.Hash() && a[1] != script.Enqueue.Hash()) {
			return next(ctx, cmd)
		}
		id := ""
		if a[1] == script.EnqueueOne.Hash() {
			id = fmt.Sprint(a[7]) // EVALSHA sha 4 k1 k2 k3 k4 id ...
			h.id.Store(id)
		}
		for i := 0; i < h.extra; i++ {
			if err := next(ctx, cmd); err != nil {
				return err
			}
			if i == 0 && h.between != nil {
				key := id
				if key == "" {
					// enqueue.lua (the server forgets last ids): the
					// task's key is its entry's id, the stream's last.
					e, _ := h.rdb.XRevRangeN(ctx, fmt.Sprint(a[3]), "+", "-", 1).Result()
					if len(e) == 1 {
						key = e[0].ID
					}
				}
				h.between(key)
			}
		}
		return next(ctx, cmd)
	}
}

// A resend of Enqueue's one call that meets the stream changed since the
// first run (another producer ahead of its id, its task run and its entry
// trimmed, its task cancelled and its entry deleted) answers as the first
// run did and adds nothing, with the reply lost once and twice; a clean
// run with the same step after it is the reference.
func TestEnqueueOneResentAfterStreamChanged(t *testing.T) {
	steps := []struct {
		name  string
		setup func(t *testing.T, env *testenv.Env, q string)
		step  func(t *testing.T, env *testenv.Env, q, id string)
		fast  bool // the first run takes the fast path
	}{
		{name: "producer-ahead", fast: true, step: func(t *testing.T, env *testenv.Env, q, _ string) {
			// Another producer: an XADD * past every id this client chose.
			if err := moveAhead(context.Background(), env.RDB, q); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "fallback-then-producer", fast: false,
			setup: func(t *testing.T, env *testenv.Env, q string) {
				if err := moveAhead(context.Background(), env.RDB, q); err != nil {
					t.Fatal(err)
				}
			},
			step: func(t *testing.T, env *testenv.Env, q, _ string) {
				if err := env.RDB.XAdd(context.Background(), &redis.XAddArgs{Stream: keys.ForQueue(q).Stream(), Values: []string{"m", "other"}}).Err(); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "acked-and-housekept", fast: true, step: func(t *testing.T, env *testenv.Env, q, id string) {
			ctx := context.Background()
			w, err := worker.New(ctx, env.RDB, &worker.Config{Queues: map[string]int{q: 1},
				BlockTimeout: 50 * time.Millisecond, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			worker.Handle(w, runJob)
			if err := w.Start(ctx); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 10*time.Second, "the task succeeded", func() bool {
				return env.RDB.Exists(ctx, keys.ForQueue(q).Result(id)).Val() == 1
			})
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := w.Stop(sctx); err != nil {
				t.Fatal(err)
			}
			if _, _, err := store.Housekeep(ctx, env.RDB, keys.ForQueue(q), time.Hour.Milliseconds()); err != nil {
				t.Fatal(err)
			}
			if n := len(env.RDB.XRange(ctx, keys.ForQueue(q).Stream(), id, id).Val()); n != 0 {
				t.Fatalf("the acked entry %s is still in the stream after housekeeping", id)
			}
		}},
		{name: "cancelled", fast: true, step: func(t *testing.T, env *testenv.Env, q, id string) {
			ctx := context.Background()
			c, err := client.New(ctx, env.RDB, &client.Config{Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			h, err := c.Task(q + "/" + id)
			if err != nil {
				t.Fatal(err)
			}
			if st, err := h.Cancel(ctx); err != nil || st != client.StateCancelled {
				t.Fatalf("cancel: %v, %v", st, err)
			}
			if n := len(env.RDB.XRange(ctx, keys.ForQueue(q).Stream(), id, id).Val()); n != 0 {
				t.Fatalf("the cancelled entry %s is still in the stream", id)
			}
		}},
	}
	type outcome struct {
		answer  string // the key, relative to the call's chosen id
		entries int64
		state   client.State
	}
	run := func(t *testing.T, env *testenv.Env, s int, extra int) outcome {
		ctx := context.Background()
		q := testenv.Queue(t)
		st := steps[s]
		if st.setup != nil {
			st.setup(t, env, q)
		}
		rdb := testenv.NewEnvClient(env)
		defer rdb.Close()
		h := &resendOne{rdb: env.RDB, extra: extra}
		h.between = func(id string) { st.step(t, env, q, id) }
		rdb.AddHook(h)
		c, err := client.New(ctx, rdb, &client.Config{Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		hd, err := c.Enqueue(ctx, Job{N: 1}, &client.EnqueueOpts{Queue: q})
		if err != nil {
			t.Fatal(err)
		}
		id, _ := h.id.Load().(string)
		if extra == 0 {
			st.step(t, env, q, strings.TrimPrefix(hd.ID(), q+"/"))
		}
		key := strings.TrimPrefix(hd.ID(), q+"/")
		o := outcome{answer: "other id"}
		if key == id {
			o.answer = "chosen id"
		}
		if hd.Duplicate() {
			o.answer += " (duplicate)"
		}
		// A server that forgets a stream's last id on deletions
		// (miniredis) gets no fast path.
		keeps, err := store.KeepsLastID(ctx, env.RDB)
		if err != nil {
			t.Fatal(err)
		}
		if fast := id != "" && key == id; fast != (st.fast && keeps) {
			t.Fatalf("the first run took the fast path: %v, want %v (the server keeps a stream's last id: %v)", fast, st.fast && keeps, keeps)
		}
		o.entries = env.RDB.XLen(ctx, keys.ForQueue(q).Stream()).Val()
		o.state, err = hd.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	env := testenv.Redis(t)
	for s, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clean := run(t, env, s, 0)
			for _, extra := range []int{1, 2} {
				if got := run(t, env, s, extra); got != clean {
					t.Errorf("reply lost %d times: %+v; a clean run: %+v", extra, got, clean)
				}
			}
		})
	}
}
