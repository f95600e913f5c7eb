package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/httpapi"
	"github.com/taskfleet/async/internal/testenv"
)

// stallHook holds every command, once armed, until its context ends, and
// says on entered that one is held.
type stallHook struct {
	armed   atomic.Bool
	entered chan struct{}
}

func (h *stallHook) hold(ctx context.Context) error {
	if !h.armed.Load() {
		return nil
	}
	select {
	case h.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

func (h *stallHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *stallHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := h.hold(ctx); err != nil {
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (h *stallHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := h.hold(ctx); err != nil {
			for _, c := range cmds {
				c.SetErr(err)
			}
			return err
		}
		return next(ctx, cmds)
	}
}

// A read under way in Redis as the process drains gets the drain's 503
// (its context is ended by the drain), not a status of the API's own.
func TestAPIDrainAnswersReads(t *testing.T) {
	for _, path := range []string{"/v1/tasks/uploads%2Fa1", "/v1/queues", "/v1/queues/uploads"} {
		t.Run(path, func(t *testing.T) {
			env := testenv.Redis(t)
			rdb := testenv.NewEnvClient(env)
			t.Cleanup(func() { _ = rdb.Close() })
			hook := &stallHook{entered: make(chan struct{}, 1)}
			rdb.AddHook(hook)
			quiet := slog.New(slog.DiscardHandler)
			c, err := client.New(context.Background(), rdb, &client.Config{Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			h, err := httpapi.New(httpapi.Config{Client: c, Inspector: inspect.New(rdb), Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			drain, drained := context.WithCancel(context.Background())
			defer drained()
			srv := httptest.NewServer(endReadsOnDrain(h, drain))
			t.Cleanup(srv.Close)
			hook.armed.Store(true)
			type answer struct {
				resp *http.Response
				body []byte
				err  error
			}
			got := make(chan answer, 1)
			go func() {
				resp, err := srv.Client().Get(srv.URL + path)
				if err != nil {
					got <- answer{err: err}
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				got <- answer{resp: resp, body: b, err: err}
			}()
			select {
			case <-hook.entered:
			case <-time.After(20 * time.Second):
				t.Fatal("the read did not reach Redis within 20 s")
			}
			drained()
			var a answer
			select {
			case a = <-got:
			case <-time.After(20 * time.Second):
				t.Fatal("no answer within 20 s of the drain")
			}
			if a.err != nil {
				t.Fatal(a.err)
			}
			var body struct{ Error string }
			if a.resp.StatusCode != http.StatusServiceUnavailable || a.resp.Header.Get("Retry-After") == "" ||
				json.Unmarshal(a.body, &body) != nil || body.Error == "" {
				t.Fatalf("GET %s as the process drains: %d %v\n%s", path, a.resp.StatusCode, a.resp.Header, a.body)
			}
		})
	}
}

// An unclean path under /v1/ reaches the API, which refuses it in JSON,
// rather than ServeMux's HTML redirect to the cleaned path; other paths
// still go to the process' mux.
func TestAPIUncleanPathIsNotRedirected(t *testing.T) {
	env := testenv.Redis(t)
	quiet := slog.New(slog.DiscardHandler)
	c, err := client.New(context.Background(), env.RDB, &client.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	h, err := httpapi.New(httpapi.Config{Client: c, Inspector: inspect.New(env.RDB), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var ready atomic.Bool
	mux := healthMux(env.RDB, &ready)
	mux.Handle("/v1/", h)
	srv := httptest.NewServer(apiFirst(h, mux))
	t.Cleanup(srv.Close)
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/v1/tasks/uploads/..", "/v1/tasks/uploads/./a1", "/v1//queues"} {
		resp, err := hc.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var body struct{ Error, Field string }
		if resp.StatusCode != http.StatusBadRequest || json.Unmarshal(b, &body) != nil || body.Field != "path" {
			t.Errorf("GET %s: %d %v\n%s; want a JSON 400 naming the path", p, resp.StatusCode, resp.Header, b)
		}
	}
	resp, err := hc.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz: %d", resp.StatusCode)
	}
}
