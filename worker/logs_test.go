package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// logLines is an io.Writer that keeps a JSON slog handler's lines.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// of returns the lines about the task id, decoded.
func (l *logLines) of(t *testing.T, id string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(l.buf.Bytes(), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["task"] == id {
			out = append(out, m)
		}
	}
	return out
}

// lineTask is what every line about a task names.
type lineTask struct{ ID, Kind, Queue, Worker string }

func debugLogger(w *logLines) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// wantLine checks one per-task line: its level, message, the attributes
// every such line has, and want's; a "duration" or "queued" is a string
// time.ParseDuration reads, at least the given minimum.
func wantLine(t *testing.T, got map[string]any, level, msg string, tk *lineTask, attempt int, durations map[string]time.Duration, want map[string]any) {
	t.Helper()
	if got["level"] != level || got["msg"] != msg {
		t.Fatalf("line %v; want level %s, msg %q", got, level, msg)
	}
	base := map[string]any{"task": tk.ID, "kind": tk.Kind, "queue": tk.Queue, "attempt": float64(attempt), "worker": tk.Worker}
	for k, v := range base {
		if got[k] != v {
			t.Fatalf("line %v: %s is %v; want %v", got, k, got[k], v)
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("line %v: %s is %v; want %v", got, k, got[k], v)
		}
	}
	for k, least := range durations {
		s, ok := got[k].(string)
		if !ok {
			t.Fatalf("line %v: %s is %T; want a duration as a string", got, k, got[k])
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < least {
			t.Fatalf("line %v: %s %q (%v); want a duration of at least %v", got, k, s, err, least)
		}
	}
	keys := len(base) + len(want) + len(durations) + 3 // time, level, msg
	if len(got) != keys {
		t.Fatalf("line %v has %d keys; want %d", got, len(got), keys)
	}
}

// A task that fails its first attempt and dies on its second logs: debug
// when each attempt starts, a warning for the failure that retries (with
// the delay and the error), an error when it dies (with the reason). One
// that succeeds logs debug lines only; one cancelled while running logs
// at info.
func TestPerTaskLogLines(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	var logs logLines
	started := make(chan struct{}, 1)
	w := b.worker(t, &worker.Config{Logger: debugLogger(&logs), Backoff: func(int) time.Duration { return 7 * time.Millisecond }},
		func(w *worker.Worker) {
			release := make(chan struct{})
			h := obsHandler(release, nil)
			worker.Handle(w, func(ctx context.Context, a obsArgs) (int, error) {
				if a.Block {
					started <- struct{}{}
				}
				return h(ctx, a)
			})
		})
	task := func(h *client.Handle) *lineTask {
		return &lineTask{ID: h.ID(), Kind: "obs", Queue: b.queue, Worker: w.Name()}
	}

	dead, err := b.c.Enqueue(ctx, obsArgs{Fail: 9}, &client.EnqueueOpts{Queue: b.queue, MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dead.Outcome(ctx); !errors.Is(err, client.ErrDead) {
		t.Fatalf("got %v; want dead", err)
	}
	lines := logs.of(t, dead.ID())
	if len(lines) != 4 {
		t.Fatalf("%d lines about the task; want 4: %v", len(lines), lines)
	}
	tk := task(dead)
	wantLine(t, lines[0], "DEBUG", "task started", tk, 1, map[string]time.Duration{"queued": 0}, nil)
	wantLine(t, lines[1], "WARN", "task failed; it runs again after the delay", tk, 1, map[string]time.Duration{"duration": obsWork},
		map[string]any{"delay": "7ms", "err": "boom 1"})
	wantLine(t, lines[2], "DEBUG", "task started", tk, 2, map[string]time.Duration{"queued": 0}, nil)
	wantLine(t, lines[3], "ERROR", "task dead", tk, 2, map[string]time.Duration{"duration": obsWork}, map[string]any{"reason": "boom 2"})

	ok, err := b.c.Enqueue(ctx, obsArgs{}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ok.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	lines = logs.of(t, ok.ID())
	if len(lines) != 2 {
		t.Fatalf("%d lines about the task; want 2: %v", len(lines), lines)
	}
	wantLine(t, lines[0], "DEBUG", "task started", task(ok), 1, map[string]time.Duration{"queued": 0}, nil)
	wantLine(t, lines[1], "DEBUG", "task succeeded", task(ok), 1, map[string]time.Duration{"duration": obsWork}, nil)

	cx, err := b.c.Enqueue(ctx, obsArgs{Block: true}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if _, err := cx.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cx.Outcome(ctx); !errors.Is(err, client.ErrCancelled) {
		t.Fatalf("got %v; want cancelled", err)
	}
	lines = logs.of(t, cx.ID())
	if len(lines) != 2 {
		t.Fatalf("%d lines about the task; want 2: %v", len(lines), lines)
	}
	wantLine(t, lines[1], "INFO", "task cancelled", task(cx), 1, map[string]time.Duration{"duration": 0},
		map[string]any{"reason": worker.ErrCancelled.Error()})
}

// At the default level (info) a task that succeeds logs nothing.
func TestPerTaskLogLinesQuietAtInfo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	var logs logLines
	b.worker(t, &worker.Config{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, func(w *worker.Worker) { worker.Handle(w, obsHandler(nil, nil)) })
	h, err := b.c.Enqueue(ctx, obsArgs{}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	if lines := logs.of(t, h.ID()); len(lines) != 0 {
		t.Fatalf("lines at info for a task that succeeded: %v", lines)
	}
}

// stealAtComplete is a go-redis hook that, once armed, hands the queue's
// pending entry to another consumer just before the worker's next call of
// the completion script: that call answers lease lost, while the handler
// has already returned (so no heartbeat cancels it first).
type stealAtComplete struct {
	armed atomic.Bool
	steal func(ctx context.Context) error
	err   atomic.Value // the steal's error, if any
}

func isComplete(cmd redis.Cmder) bool {
	args := cmd.Args()
	if len(args) < 2 {
		return false
	}
	body, _ := args[1].(string)
	switch strings.ToLower(cmd.Name()) {
	case "evalsha":
		return body == script.Complete.Hash()
	case "eval":
		return strings.Contains(body, "complete.lua")
	}
	return false
}

func (s *stealAtComplete) DialHook(next redis.DialHook) redis.DialHook { return next }

func (s *stealAtComplete) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (s *stealAtComplete) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isComplete(cmd) && s.armed.CompareAndSwap(true, false) {
			if err := s.steal(ctx); err != nil {
				s.err.Store(err)
			}
		}
		return next(ctx, cmd)
	}
}

// A task whose lease is found lost as its outcome is recorded logs one line
// at info, with the attributes of every per-task line, the handler's run
// time and the reason; its observers get the event with the run time. The
// worker then takes the task over after its lease and runs it again.
func TestPerTaskLogLineLeaseLost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	var logs logLines
	rec := &recorder{}
	stream := keys.ForQueue(b.queue).Stream()
	hook := &stealAtComplete{steal: func(ctx context.Context) error {
		p, err := b.env.RDB.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: keys.Group, Start: "-", End: "+", Count: 10}).Result()
		if err != nil {
			return err
		}
		if len(p) != 1 {
			return fmt.Errorf("%d entries pending; want 1", len(p))
		}
		return b.env.RDB.XClaim(ctx, &redis.XClaimArgs{Stream: stream, Group: keys.Group, Consumer: "thief", Messages: []string{p[0].ID}}).Err()
	}}
	hook.armed.Store(true)
	rdb := testenv.NewClient(b.env.Addr)
	rdb.AddHook(hook)
	t.Cleanup(func() { _ = rdb.Close() })
	cfg := &worker.Config{Logger: debugLogger(&logs), Observers: []worker.Observer{rec}, Lease: time.Second}
	w := b.workerOn(t, rdb, cfg, func(w *worker.Worker) { worker.Handle(w, obsHandler(nil, nil)) })

	h, err := b.c.Enqueue(ctx, obsArgs{}, &client.EnqueueOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	if err, _ := hook.err.Load().(error); err != nil || hook.armed.Load() {
		t.Fatalf("steal: armed %v, err %v; want done", hook.armed.Load(), err)
	}
	tk := &lineTask{ID: h.ID(), Kind: "obs", Queue: b.queue, Worker: w.Name()}
	lines := logs.of(t, h.ID())
	if len(lines) != 5 {
		t.Fatalf("%d lines about the task; want 5: %v", len(lines), lines)
	}
	wantLine(t, lines[0], "DEBUG", "task started", tk, 1, map[string]time.Duration{"queued": 0}, nil)
	wantLine(t, lines[1], "DEBUG", "task succeeded", tk, 1, map[string]time.Duration{"duration": obsWork}, nil)
	wantLine(t, lines[2], "INFO", "task lease lost; its outcome is not recorded here", tk, 1, map[string]time.Duration{"duration": obsWork},
		map[string]any{"err": worker.ErrLeaseLost.Error()})
	wantLine(t, lines[3], "DEBUG", "task started", tk, 1, map[string]time.Duration{"queued": 0}, nil)
	wantLine(t, lines[4], "DEBUG", "task succeeded", tk, 1, map[string]time.Duration{"duration": obsWork}, nil)

	evs := rec.of(h.ID())
	if got := types(evs); got != "started,succeeded,lease_lost,started,succeeded" {
		t.Fatalf("events %s; want started,succeeded,lease_lost,started,succeeded", got)
	}
	if e := evs[2]; !errors.Is(e.Err, worker.ErrLeaseLost) || e.Duration < obsWork {
		t.Fatalf("lease_lost event %+v; want ErrLeaseLost and the handler's run time (at least %v)", e, obsWork)
	}
}
