package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
)

// api is an API served on loopback over a test's Redis.
type api struct {
	t     testing.TB
	env   *testenv.Env
	c     *client.Client // the API's client
	in    *inspect.Inspector
	srv   *httptest.Server
	queue string // a queue of the test's own
	fault *faultHook
	// served is told when a request's ServeHTTP returned.
	served chan *http.Request
}

// newAPI serves the API on env's Redis, through a client of its own with
// a faultHook, with cfg's fields (Client and Inspector set here).
func newAPI(t testing.TB, env *testenv.Env, cfg Config) *api {
	t.Helper()
	rdb := testenv.NewEnvClient(env)
	t.Cleanup(func() { _ = rdb.Close() })
	fh := &faultHook{}
	rdb.AddHook(fh)
	quiet := slog.New(slog.DiscardHandler)
	c, err := client.New(context.Background(), rdb, &client.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	cfg.Client, cfg.Inspector = c, inspect.New(rdb)
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := &api{t: t, env: env, c: c, in: cfg.Inspector, queue: testenv.Queue(t), fault: fh, served: make(chan *http.Request, 64)}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		select {
		case a.served <- r:
		default:
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

// reply is a response: its status, headers and body, decoded.
type reply struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any
}

// field is the "field" of an error body.
func (r *reply) field() string { s, _ := r.JSON["field"].(string); return s }

// msg is the "error" of an error body.
func (r *reply) msg() string { s, _ := r.JSON["error"].(string); return s }

// do sends a request; body is sent as is (a string) or as JSON (any
// other value); header pairs follow.
func (a *api) do(method, path string, body any, header ...string) *reply {
	a.t.Helper()
	return a.doCtx(context.Background(), method, path, body, header...)
}

func (a *api) doCtx(ctx context.Context, method, path string, body any, header ...string) *reply {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.srv.URL+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		if header[i+1] == "" {
			req.Header.Del(header[i])
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	r := &reply{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if len(b) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &r.JSON); err != nil {
			a.t.Fatalf("%s %s: body is not a JSON object: %v: %s", method, path, err, b)
		}
	}
	return r
}

// want fails the test unless r has status.
func (r *reply) want(t *testing.T, status int) *reply {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
	return r
}

// faultHook makes the client's script calls fail, as Redis would: with
// OOM (Redis at maxmemory) or with a broken connection.
type faultHook struct {
	mode atomic.Value // "", "oom" or "down"
}

func (f *faultHook) err(cmds ...redis.Cmder) error {
	m, _ := f.mode.Load().(string)
	if m == "" {
		return nil
	}
	for _, c := range cmds {
		if n := strings.ToUpper(c.Name()); strings.HasPrefix(n, "EVAL") {
			if m == "oom" {
				return errors.New("OOM command not allowed when used memory > 'maxmemory'.")
			}
			return io.ErrUnexpectedEOF
		}
	}
	return nil
}

func (f *faultHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *faultHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := f.err(cmd); err != nil {
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (f *faultHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := f.err(cmds...); err != nil {
			for _, c := range cmds {
				c.SetErr(err)
			}
			return err
		}
		return next(ctx, cmds)
	}
}
