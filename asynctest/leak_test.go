package asynctest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/taskfleet/async/worker"
)

// Leaky is the kind of a handler that leaves a goroutine behind.
type Leaky struct{}

func (Leaky) Kind() string { return "kit.leaky" }

// leftBehind is the function the leaked goroutine runs: the report names it.
func leftBehind(release <-chan struct{}) { <-release }

// A goroutine a handler started and did not end makes the fleet's cleanup
// fail the test, with its stack; the fleet's own goroutines are all gone
// by then.
func TestFleetReportsLeakedGoroutine(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release) // for the package's goleak check
	tb := newFakeTB(t, t.Name())
	tb.run(func(tb testing.TB) {
		f := NewFleet(tb, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, _ Leaky) (int, error) {
				go leftBehind(release)
				return 1, nil
			})
		}, &Options{leakBound: 300 * time.Millisecond})
		h, err := f.Client().Enqueue(context.Background(), Leaky{}, nil)
		if err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), f.opts.WaitTimeout)
		defer cancel()
		if _, err := h.Outcome(ctx); err != nil {
			tb.Fatal(err)
		}
	})
	errs := tb.failures()
	if len(errs) != 1 || !strings.Contains(errs[0], "1 goroutine(s) of the fleet still run") || !strings.Contains(errs[0], "asynctest.leftBehind") {
		t.Fatalf("failures %q, want one naming the leaked goroutine", errs)
	}
}

// A fleet whose handlers end everything they start passes its check, and
// only its own goroutines count: another fleet's, running at the same
// time, and the test's own are not its.
func TestFleetLeakCheckIsPerFleet(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	other := newFakeTB(t, "other")
	// On a miniredis of its own: on a real Redis, two fleets take turns.
	otherURL := "redis://" + miniredis.RunT(t).Addr() + "/0"
	started := make(chan *Fleet)
	done := make(chan struct{})
	go func() {
		defer close(done)
		other.run(func(tb testing.TB) {
			f := NewFleet(tb, func(w *worker.Worker) {
				worker.Handle(w, func(ctx context.Context, _ Leaky) (int, error) { return 1, nil })
			}, &Options{redisURL: otherURL})
			started <- f
			<-release // the other fleet lives on while the first stops
		})
	}()
	of := <-started
	unlabeled := make(chan struct{})
	go func() { <-unlabeled }() // the test's own: no fleet's label
	tb := newFakeTB(t, t.Name())
	tb.run(func(tb testing.TB) {
		f := NewFleet(tb, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, _ Leaky) (int, error) { return 1, nil })
		}, nil)
		if len(labeledGoroutines(f.id, nil)) == 0 || len(labeledGoroutines(of.id, nil)) == 0 {
			tb.Fatal("no goroutine carries a fleet's label")
		}
		h, err := f.Client().Enqueue(context.Background(), Leaky{}, nil)
		if err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), f.opts.WaitTimeout)
		defer cancel()
		if _, err := h.Outcome(ctx); err != nil {
			tb.Fatal(err)
		}
	})
	if errs := tb.failures(); len(errs) != 0 {
		t.Errorf("failures %q, want none", errs)
	}
	close(unlabeled)
	close(release)
	<-done
	if errs := other.failures(); len(errs) != 0 {
		t.Errorf("the other fleet's failures %q, want none", errs)
	}
}

// Fetch is the kind of a handler that makes an HTTP call.
type Fetch struct{ URL string }

func (Fetch) Kind() string { return "kit.fetch" }

// A handler's HTTP call through http.DefaultClient leaves keep-alive
// connection goroutines in the Transport's pool, carrying the fleet's
// label: they are the pool's, not the handler's, and the leak check leaves
// them out. A goroutine Options.IgnoreGoroutines names is left out too.
func TestLeakCheckIgnoresPools(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	// For the package's goleak check, after the fleet's: the pool's
	// connections end with it.
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	release := make(chan struct{})
	defer close(release)
	tb := newFakeTB(t, t.Name())
	var pooled int
	tb.run(func(tb testing.TB) {
		f := NewFleet(tb, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, a Fetch) (string, error) {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL, nil)
				if err != nil {
					return "", err
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return "", err
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				return string(b), err
			})
			worker.Handle(w, func(ctx context.Context, _ Leaky) (int, error) {
				go leftBehind(release)
				return 1, nil
			})
		}, &Options{leakBound: 300 * time.Millisecond, IgnoreGoroutines: []string{"github.com/taskfleet/async/asynctest.leftBehind"}})
		ctx := context.Background()
		h, err := f.Client().Enqueue(ctx, Fetch{URL: srv.URL}, nil)
		if err != nil {
			tb.Fatal(err)
		}
		if got := WaitResult[string](f, h); got != "ok" {
			tb.Fatalf("result %q", got)
		}
		h, err = f.Client().Enqueue(ctx, Leaky{}, nil)
		if err != nil {
			tb.Fatal(err)
		}
		WaitResult[int](f, h)
		for _, rec := range labeledGoroutines(f.id, nil) {
			if strings.Contains(rec, "persistConn") {
				pooled++
			}
		}
	})
	if pooled == 0 {
		t.Error("no keep-alive goroutine carries the fleet's label: the test does not test the check")
	}
	if errs := tb.failures(); len(errs) != 0 {
		t.Errorf("failures %q, want none", errs)
	}
}
