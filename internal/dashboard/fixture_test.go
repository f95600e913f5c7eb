package dashboard

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Job is the fixture's task: it fails with Msg when Fail is set. Args show
// as JSON in field order (codec.ToJSON keeps the order of the msgpack), and
// lists show their first runes: Any comes before the long Msg so that the
// hostile args of the deep task are among them.
type Job struct {
	N    int            `msgpack:"n"`
	Fail bool           `msgpack:"fail"`
	Any  map[string]any `msgpack:"any,omitempty"`
	Msg  string         `msgpack:"msg"`
}

func (Job) Kind() string { return "dash.job" }

// Hostile values, in args, errors and (written past the client, as a
// producer that skips validation would) kinds and ids.
const (
	hostileScript = `<script>alert(1)</script>`
	hostileAttr   = `"onmouseover=alert(1) x="`
)

var (
	hostileLong    = strings.Repeat("A", 100<<10)
	hostileInvalid = "bad\xff\xfe utf-8 \xc3"
)

// fixture is a known workload on a Redis:
//   - queue Waiting holds 3 waiting tasks (no worker serves it), one of
//     them with hostile args nested deep, one scheduled an hour later, and
//     a raw entry with a hostile kind and key;
//   - a ForkJoin group of 3 members and a join waits in queue Waiting;
//   - queue Dead is served by a worker whose handler fails: task Hostile
//     died with a hostile error, task Plain died with "boom".
type fixture struct {
	env     *testenv.Env
	c       *client.Client
	in      *inspect.Inspector
	Waiting string
	Dead    string
	Hostile string // the dead task with the hostile error
	Plain   string // a dead task with a plain error
	Later   string // the scheduled task
	Deep    string // the waiting task with hostile args
	Group   string // a ForkJoin of 3 members and a join, in queue Waiting
	RawKind string // the kind of the raw entry
}

func deepArgs(n int) map[string]any {
	m := map[string]any{"leaf": hostileScript + hostileAttr, "bad": hostileInvalid}
	for range n {
		m = map[string]any{"x": m, hostileScript: hostileAttr}
	}
	return m
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	env := testenv.Redis(t)
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	c, err := client.New(ctx, env.RDB, &client.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	f := &fixture{env: env, c: c, in: inspect.New(env.RDB),
		Waiting: testenv.Queue(t) + "-w", Dead: testenv.Queue(t) + "-d"}
	for n := 1; n <= 2; n++ {
		if _, err := f.c.Enqueue(ctx, Job{N: n}, &client.EnqueueOpts{Queue: f.Waiting}); err != nil {
			t.Fatal(err)
		}
	}
	h, err := f.c.Enqueue(ctx, Job{N: 3, Msg: hostileLong, Any: deepArgs(20)}, &client.EnqueueOpts{Queue: f.Waiting, ID: "deep",
		Meta: map[string]string{"note": hostileScript}})
	if err != nil {
		t.Fatal(err)
	}
	f.Deep = h.ID()
	h, err = f.c.Enqueue(ctx, Job{N: 4}, &client.EnqueueOpts{Queue: f.Waiting, ID: "later", Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	f.Later = h.ID()
	specs := make([]client.Spec, 3)
	for j := range specs {
		specs[j] = client.Spec{Args: Job{N: 10 + j}, Opts: &client.EnqueueOpts{Queue: f.Waiting}}
	}
	g, err := patterns.ForkJoin(ctx, c, specs, &client.Spec{Args: Job{N: 20}, Opts: &client.EnqueueOpts{Queue: f.Waiting}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.Group = g.ID()
	// A raw entry, as a producer that skips the client's checks could
	// write: its kind and key are hostile.
	f.RawKind = hostileScript + hostileAttr + hostileInvalid
	raw := codec.AppendEnvelope(nil, &codec.Envelope{Key: "raw" + hostileAttr, Kind: f.RawKind, Attempt: 1, MaxAttempts: 1})
	if err := env.RDB.XAdd(ctx, &redis.XAddArgs{Stream: keys.ForQueue(f.Waiting).Stream(), Values: []any{"m", string(raw)}}).Err(); err != nil {
		t.Fatal(err)
	}

	testenv.StartWorker(t, env.RDB, f.Dead, &worker.Config{Logger: quiet}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j Job) (Job, error) {
			if j.Fail {
				return j, worker.Permanent(errors.New(j.Msg))
			}
			return j, nil
		})
	}, false)
	for _, x := range []struct {
		id  string
		msg string
		to  *string
	}{{"hostile", hostileScript + hostileAttr + hostileInvalid + hostileLong, &f.Hostile}, {"plain", "boom", &f.Plain}} {
		h, err := f.c.Enqueue(ctx, Job{Fail: true, Msg: x.msg}, &client.EnqueueOpts{Queue: f.Dead, ID: x.id, MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Outcome(ctx); err == nil {
			t.Fatalf("%s succeeded", x.id)
		}
		*x.to = h.ID()
	}
	return f
}

// waitPaused waits until every live worker of queue (at least one) reports
// it paused. A worker registers its paused set right after it read the
// flags, so from then on it starts no task of the queue.
func (f *fixture) waitPaused(t testing.TB, queue string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, "the workers of "+queue+" to report it paused", func() bool {
		ws, err := f.in.Workers(context.Background())
		if err != nil {
			return false
		}
		n := 0
		for _, w := range ws {
			if _, ok := w.Queues[queue]; !ok {
				continue
			}
			if !slices.Contains(w.Paused, queue) {
				return false
			}
			n++
		}
		return n > 0
	})
}

// server starts the dashboard on f with opts (Addr defaults to a loopback
// one) and returns its URL and a browser-like client (cookies kept,
// redirects not followed).
func (f *fixture) server(t testing.TB, opts Options) (*httptest.Server, *http.Client) {
	t.Helper()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	h, err := New(f.in, opts)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	base := strings.TrimSuffix(opts.BasePath, "/")
	mux.Handle(base+"/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(hc.CloseIdleConnections)
	return srv, hc
}
