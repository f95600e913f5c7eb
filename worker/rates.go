package worker

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/ratelimit"
)

// RateLimit throttles tasks across the fleet with a token bucket (package
// ratelimit): a worker takes a token before it runs a task the limit
// applies to. Exactly one of KeyPrefix, Queue and Kind is set. The buckets
// are named by the RateKey, "queue:<queue>" and "kind:<kind>" (and
// patterns.Throttle's "g:<queue>/<group id>..."): a RateKey or a direct
// ratelimit call with the same name shares the bucket.
type RateLimit struct {
	// KeyPrefix applies Limit to the tasks whose EnqueueOpts.RateKey starts
	// with it, one bucket per RateKey (so "s3:" gives every bucket of S3 its
	// own rate). When several prefixes match, the longest wins.
	KeyPrefix string

	// Queue applies Limit to every task of the queue, one bucket for all.
	Queue string

	// Kind applies Limit to every task of the kind, one bucket for all.
	Kind string

	Limit ratelimit.Limit
}

// bucket is one token bucket a task takes from.
type bucket struct {
	l   *ratelimit.Limiter
	key string
}

// rates holds a worker's rate limits.
type rates struct {
	prefixes []RateLimit // longest prefix first
	byPrefix map[string]*ratelimit.Limiter
	byQueue  map[string]*ratelimit.Limiter
	byKind   map[string]*ratelimit.Limiter

	carried  sync.Map // "n/perUs" → *ratelimit.Limiter, for limits tasks carry
	unknown  sync.Map // RateKeys without a limit here, warned about once
	unknownN atomic.Int64
}

// maxUnknownKeys bounds the RateKeys remembered for their warning.
const maxUnknownKeys = 1000

func validateRates(rs []RateLimit) error {
	for i, r := range rs {
		set := 0
		for _, s := range []string{r.KeyPrefix, r.Queue, r.Kind} {
			if s != "" {
				set++
			}
		}
		if set != 1 {
			return fmt.Errorf("worker: Config.RateLimits[%d] sets %d of KeyPrefix, Queue and Kind; set exactly one", i, set)
		}
		var err error
		switch {
		case r.KeyPrefix != "":
			err = ratelimit.ValidateKey(r.KeyPrefix)
		case r.Queue != "":
			err = keys.ValidateName("queue", r.Queue)
		default:
			err = keys.ValidateName("kind", r.Kind)
		}
		if err == nil {
			err = r.Limit.Validate()
		}
		if err != nil {
			return fmt.Errorf("worker: Config.RateLimits[%d]: %w", i, err)
		}
	}
	return nil
}

func (w *Worker) initRates() {
	rs := &rates{byPrefix: map[string]*ratelimit.Limiter{}, byQueue: map[string]*ratelimit.Limiter{}, byKind: map[string]*ratelimit.Limiter{}}
	for _, r := range w.cfg.RateLimits {
		l := ratelimit.New(w.rdb, r.Limit)
		switch {
		case r.KeyPrefix != "":
			rs.prefixes = append(rs.prefixes, r)
			rs.byPrefix[r.KeyPrefix] = l
		case r.Queue != "":
			rs.byQueue[r.Queue] = l
		default:
			rs.byKind[r.Kind] = l
		}
	}
	sort.SliceStable(rs.prefixes, func(a, b int) bool { return len(rs.prefixes[a].KeyPrefix) > len(rs.prefixes[b].KeyPrefix) })
	w.rates = rs
}

// bucketsFor returns the buckets j's task takes a token from: its RateKey's
// (under the limit it carries, or the longest matching prefix's), its
// queue's and its kind's.
func (w *Worker) bucketsFor(j *job) []bucket {
	env := j.env
	if env == nil {
		return nil
	}
	rs := w.rates
	var out []bucket
	if env.RateKey != "" {
		switch {
		case env.RateN > 0 && env.RatePerUs > 0:
			id := fmt.Sprintf("%d/%d", env.RateN, env.RatePerUs)
			l, ok := rs.carried.Load(id)
			if !ok {
				l, _ = rs.carried.LoadOrStore(id, ratelimit.New(w.rdb, ratelimit.Limit{Rate: env.RateN, Per: time.Duration(env.RatePerUs) * time.Microsecond}))
			}
			out = append(out, bucket{l.(*ratelimit.Limiter), env.RateKey})
		default:
			found := false
			for _, p := range rs.prefixes {
				if strings.HasPrefix(env.RateKey, p.KeyPrefix) {
					out = append(out, bucket{rs.byPrefix[p.KeyPrefix], env.RateKey})
					found = true
					break
				}
			}
			if found {
				break
			}
			if rs.unknownN.Load() >= maxUnknownKeys {
				break
			}
			if _, warned := rs.unknown.LoadOrStore(env.RateKey, true); !warned {
				rs.unknownN.Add(1)
				w.log.Warn("task has a RateKey that no Config.RateLimits prefix of this worker matches; it runs unthrottled",
					slog.String("rate_key", env.RateKey), slog.String("task", keys.TaskID(j.q.keys.Name, j.key)))
			}
		}
	}
	if l := rs.byQueue[j.q.served()]; l != nil {
		out = append(out, bucket{l, "queue:" + j.q.served()})
	}
	if l := rs.byKind[env.Kind]; l != nil {
		out = append(out, bucket{l, "kind:" + env.Kind})
	}
	return out
}

// throttle takes j's tokens, one from each bucket that applies. It returns
// true, and the buckets it took from, when j may run now. Otherwise j's
// task was parked in Redis until its turn at the bucket that refused (see
// ratelimit.Limiter.Take), when it tries again, and the tokens taken from
// the other buckets were given back. Tokens are taken when a task starts,
// so the limit holds for starts however late a parked task comes back.
func (w *Worker) throttle(j *job) (bool, []bucket) {
	bs := w.bucketsFor(j)
	if len(bs) == 0 {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Lease/4)
	defer cancel()
	var taken []bucket
	for _, b := range bs {
		ok, wait, turn, err := b.l.Take(ctx, b.key, 1, j.env.RateTurn)
		if err != nil {
			// Without its token the task may not run: it comes back after
			// a short wait.
			w.log.Error("take a rate limit token; the task retries in a second", slog.String("bucket", b.key), slog.Any("err", err))
			w.refund(taken)
			w.fire(j, EventThrottled, time.Second, err)
			w.send(w.rateParkOutcome(j, time.Second, j.env.RateTurn))
			return false, nil
		}
		if !ok {
			w.refund(taken)
			w.fire(j, EventThrottled, wait, nil)
			w.send(w.rateParkOutcome(j, wait, turn))
			return false, nil
		}
		taken = append(taken, b)
	}
	return true, taken
}

// refund gives back tokens taken for a task that did not run.
func (w *Worker) refund(bs []bucket) {
	if len(bs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Lease/4)
	defer cancel()
	for _, b := range bs {
		if err := b.l.Refund(ctx, b.key, 1); err != nil {
			w.log.Error("give back a rate limit token", slog.String("bucket", b.key), slog.Any("err", err))
		}
	}
}

// rateParkOutcome parks j's task for wait, to come back with turn.
func (w *Worker) rateParkOutcome(j *job, wait time.Duration, turn int64) *outcome {
	ms := (wait + time.Millisecond - 1) / time.Millisecond // whole ms, rounded up
	return j.handBack(ms*time.Millisecond, func(e *codec.Envelope) { e.RateTurn = turn })
}
