package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
)

// leaveHook makes the caller of a request go away at the first script
// call of the client once armed: before the call (before) or after it. It
// cancels the caller's request and waits until the server saw it go
// (the request's context done) before letting the client go on.
type leaveHook struct {
	armed  atomic.Bool
	before bool
	once   sync.Once
	leave  func()                 // cancels the caller's request
	gone   func() <-chan struct{} // the server's request context's Done
	t      testing.TB
}

func (h *leaveHook) at(cmds ...redis.Cmder) bool {
	if !h.armed.Load() {
		return false
	}
	for _, c := range cmds {
		if strings.HasPrefix(strings.ToUpper(c.Name()), "EVAL") {
			return true
		}
	}
	return false
}

func (h *leaveHook) fire() {
	h.once.Do(func() {
		h.leave()
		select {
		case <-h.gone():
		case <-time.After(10 * time.Second):
			h.t.Error("the server did not see its caller go away within 10 s")
		}
	})
}

func (h *leaveHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *leaveHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		at := h.at(cmd)
		if at && h.before {
			h.fire()
		}
		err := next(ctx, cmd)
		if at {
			h.fire()
		}
		return err
	}
}

func (h *leaveHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		at := h.at(cmds...)
		if at && h.before {
			h.fire()
		}
		err := next(ctx, cmds)
		if at {
			h.fire()
		}
		return err
	}
}

// TestEnqueueOutlivesCaller: a caller that goes away while its tasks are
// being written does not cut the write: a batch of several writes (500
// tasks a write) is added whole, and a single task is added, though the
// caller never reads the answer.
func TestEnqueueOutlivesCaller(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		n      int // tasks; 0 for a single enqueue
		before bool
	}{
		{"batch", 1201, false},
		{"single", 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			env := testenv.Redis(t)
			queue := testenv.Queue(t)
			rdb := testenv.NewEnvClient(env)
			t.Cleanup(func() { _ = rdb.Close() })
			var reqCtx atomic.Value // the server's request context
			callerCtx, leave := context.WithCancel(context.Background())
			defer leave()
			hook := &leaveHook{before: c.before, leave: leave, t: t,
				gone: func() <-chan struct{} { return reqCtx.Load().(context.Context).Done() }}
			rdb.AddHook(hook)
			quiet := slog.New(slog.DiscardHandler)
			cl, err := client.New(context.Background(), rdb, &client.Config{Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cl.Close() })
			in := inspect.New(rdb)
			h, err := New(Config{Client: cl, Inspector: in, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(served)
				reqCtx.Store(r.Context())
				h.ServeHTTP(w, r)
			}))
			t.Cleanup(srv.Close)
			path, body := "/v1/queues/"+queue+"/tasks", `{"kind":"k","id":"t0"}`
			ids := []string{queue + "/t0"}
			if c.n > 0 {
				path += "/batch"
				var b strings.Builder
				ids = ids[:0]
				for i := range c.n {
					fmt.Fprintf(&b, "{\"kind\":\"k\",\"id\":\"t%d\"}\n", i)
					ids = append(ids, fmt.Sprintf("%s/t%d", queue, i))
				}
				body = b.String()
			}
			req, err := http.NewRequestWithContext(callerCtx, "POST", srv.URL+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			hook.armed.Store(true)
			resp, err := srv.Client().Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("the caller went away, yet got status %d", resp.StatusCode)
			}
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("the caller's error: %v", err)
			}
			select {
			case <-served:
			case <-time.After(30 * time.Second):
				t.Fatal("the request was not served within 30 s")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			missing := 0
			for _, id := range ids {
				h, err := cl.Task(id)
				if err != nil {
					t.Fatal(err)
				}
				if st, err := h.State(ctx); err != nil || st != client.StatePending {
					missing++
				}
			}
			if missing > 0 {
				t.Fatalf("%d of the %d tasks were not added (or not pending) after the caller went away", missing, len(ids))
			}
		})
	}
}
