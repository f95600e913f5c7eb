package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// WorkerReg is what a worker registers about itself (keys.Worker).
type WorkerReg struct {
	Name        string
	Host        string
	PID         int
	Queues      map[string]int // queue → weight
	Concurrency int
	Running     int
	Paused      []string // its queues it does not fetch from now
	Kinds       []string // the kinds it has handlers for
	StartedMs   int64    // Unix ms, Redis time
	HeartbeatMs int64    // Unix ms, Redis time (set by Register)
}

// maxWorkerField bounds each field read back from a registration.
const maxWorkerField = 64 << 10

// Register writes w's registration, to expire ttl from Redis' now unless
// registered again (workerreg.lua); it returns Redis' now.
func Register(ctx context.Context, rdb redis.Scripter, w WorkerReg, ttl time.Duration) (int64, error) {
	qs := make([]string, 0, len(w.Queues))
	for q, wt := range w.Queues {
		qs = append(qs, q+"="+strconv.Itoa(wt))
	}
	slices.Sort(qs)
	paused := slices.Clone(w.Paused)
	slices.Sort(paused)
	kinds := slices.Clone(w.Kinds)
	slices.Sort(kinds)
	now, err := script.WorkerReg.Run(ctx, rdb, []string{keys.Worker(w.Name), keys.WorkerIndex}, w.Name, ttl.Milliseconds(),
		"name", w.Name, "host", w.Host, "pid", w.PID, "queues", strings.Join(qs, ","), "conc", w.Concurrency,
		"run", w.Running, "paused", strings.Join(paused, ","), "kinds", strings.Join(kinds, ","), "st", w.StartedMs).Int64()
	if err != nil {
		return 0, fmt.Errorf("register worker %q: %w", w.Name, err)
	}
	return now, nil
}

// Unregister deletes the registration of the worker name. Running it twice
// leaves the same state.
//
// Two commands, one after the other: each is idempotent, and go-redis
// resends each on its own when its reply is lost.
func Unregister(ctx context.Context, rdb redis.Cmdable, name string) error {
	if err := rdb.Del(ctx, keys.Worker(name)).Err(); err != nil {
		return fmt.Errorf("unregister worker %q: %w", name, err)
	}
	if err := rdb.ZRem(ctx, keys.WorkerIndex, name).Err(); err != nil {
		return fmt.Errorf("unregister worker %q: %w", name, err)
	}
	return nil
}

// Workers reads the registrations that have not expired, by name: the
// index, then every hash it names in one pipeline. A registration whose
// hash expired is left out (the next registration drops it from the
// index); fields out of form are left empty.
func Workers(ctx context.Context, rdb redis.Cmdable) ([]WorkerReg, error) {
	names, err := rdb.ZRange(ctx, keys.WorkerIndex, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	cmds := make([]*redis.MapStringStringCmd, len(names))
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range names {
			cmds[i] = p.HGetAll(ctx, keys.Worker(n))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read workers: %w", err)
	}
	out := make([]WorkerReg, 0, len(names))
	for i, c := range cmds {
		h := c.Val()
		if len(h) == 0 || h["name"] != names[i] {
			continue
		}
		out = append(out, parseWorker(h))
	}
	slices.SortFunc(out, func(a, b WorkerReg) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func parseWorker(h map[string]string) WorkerReg {
	str := func(f string) string {
		s := h[f]
		if len(s) > maxWorkerField {
			return ""
		}
		return s
	}
	num := func(f string) int64 { n, _ := strconv.ParseInt(str(f), 10, 64); return max(n, 0) }
	w := WorkerReg{Name: str("name"), Host: str("host"), PID: int(num("pid")), Concurrency: int(num("conc")),
		Running: int(num("run")), StartedMs: num("st"), HeartbeatMs: num("hb"), Queues: map[string]int{}}
	for _, qw := range strings.Split(str("queues"), ",") {
		q, wt, ok := strings.Cut(qw, "=")
		n, err := strconv.Atoi(wt)
		if !ok || err != nil || keys.ValidateName("queue", q) != nil {
			continue
		}
		w.Queues[q] = n
	}
	for _, k := range strings.Split(str("kinds"), ",") {
		if keys.ValidateName("kind", k) == nil {
			w.Kinds = append(w.Kinds, k)
		}
	}
	for _, q := range strings.Split(str("paused"), ",") {
		if keys.ValidateName("queue", q) == nil {
			w.Paused = append(w.Paused, q)
		}
	}
	return w
}
