package worker

import (
	"context"
	"errors"
	"fmt"
	"github.com/taskfleet/async/client"
	"log/slog"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// BatchErrors is what a batch handler returns when some of its items
// failed: item index → error. The items not named succeeded with their
// results; the ones named go to the dead-letter store with their error (an
// item's error is final; client.RetryDead runs it again, as a batch of
// one).
type BatchErrors map[int]error

func (e BatchErrors) Error() string {
	idx := make([]int, 0, len(e))
	for i := range e {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	var b strings.Builder
	fmt.Fprintf(&b, "%d items failed:", len(e))
	for n, i := range idx {
		if n == 3 {
			b.WriteString(" ...")
			break
		}
		fmt.Fprintf(&b, " [%d] %v;", i, e[i])
	}
	return b.String()
}

// errRecorded tells run that a batch handler recorded its outcome itself.
var errRecorded = errors.New("recorded by the batch handler")

// HandleBatch registers fn as the handler of the batches of In's kind (the
// Kind of In's zero value, as patterns.NewBatch[In, Out] names its
// batches): fn receives a batch's items in
// append order and returns one result per item, in the same order.
//
//   - nil error: every item succeeded; len(results) must equal len(items).
//   - a BatchErrors: the items it names failed (dead-lettered with their
//     error), the others succeeded with their results.
//   - any other error: the batch failed as a whole and runs again with the
//     same items (backoff as for tasks), up to the batch's MaxAttempts;
//     after the last, or a Permanent error, every item is dead-lettered
//     with it.
//
// Items cancelled before their batch runs are left out. A batch that runs
// again after its worker died gets the items that have not ended. An item
// run on its own (client.RetryDead of a dead item) comes as a batch of one.
// HandleBatch panics on a bad kind, a kind registered twice or a started
// worker, like Handle.
func HandleBatch[In client.Args, Out any](w *Worker, fn func(ctx context.Context, items []In) ([]Out, error)) {
	var zero In
	kind := zero.Kind()
	if err := keys.ValidateName("kind", kind); err != nil {
		panic(fmt.Sprintf("worker.HandleBatch: %v", err))
	}
	w.register(kind, func(ctx context.Context, payload []byte) ([]byte, error) {
		t, ok := taskValueOf(ctx)
		if !ok || t.j == nil {
			// Not a worker's attempt (a handler run alone has no batch in
			// Redis to read nor to record): asynctest.RunBatch runs fn.
			return nil, Permanent(fmt.Errorf("worker.HandleBatch %s: ctx is not a worker's attempt", kind))
		}
		if _, _, item := keys.BatchOfItem(t.j.key); item || !strings.HasPrefix(t.j.key, keys.BatchKeyPrefix) {
			return runBatchOfOne(ctx, kind, fn, payload)
		}
		return runBatch(ctx, t, kind, fn)
	})
}

// runBatchOfOne runs an item enqueued on its own (a dead item retried).
func runBatchOfOne[In, Out any](ctx context.Context, kind string, fn func(context.Context, []In) ([]Out, error), payload []byte) ([]byte, error) {
	var v In
	if err := codec.Unmarshal(payload, &v); err != nil {
		return nil, Permanent(fmt.Errorf("decode %s item into %T: %w", kind, v, err))
	}
	outs, err := fn(ctx, []In{v})
	var be BatchErrors
	if errors.As(err, &be) {
		if e := be[0]; e != nil {
			return nil, Permanent(e)
		}
		err = nil
	}
	if err != nil {
		return nil, err
	}
	if len(outs) != 1 {
		return nil, Permanent(fmt.Errorf("%s batch handler returned %d results for 1 item", kind, len(outs)))
	}
	out, err := codec.Marshal(outs[0])
	if err != nil {
		return nil, Permanent(fmt.Errorf("encode %s result %T: %w", kind, outs[0], err))
	}
	return out, nil
}

func runBatch[In, Out any](ctx context.Context, t *taskValue, kind string, fn func(context.Context, []In) ([]Out, error)) ([]byte, error) {
	j, w := t.j, t.w
	q := j.q.keys
	raw, cancelled, marked, err := store.BatchItemsOf(ctx, w.rdb, q, j.key)
	if err != nil {
		return nil, err // the batch runs again
	}
	// dead is the envelope a dead item keeps: RetryDead runs it alone.
	dead := func(i int) []byte {
		e := *j.env
		e.Key, e.Payload, e.Attempt, e.Parked, e.Lost, e.RateTurn = j.key+"."+strconv.Itoa(i), []byte(raw[i]), 1, 0, 0, 0
		return codec.AppendEnvelope(nil, &e)
	}
	var (
		idx  []int // indexes of the items handed to fn
		vals []In
		outs []store.BatchOutcome
	)
	for i, r := range raw {
		if cancelled[i] {
			continue
		}
		var v In
		if err := codec.Unmarshal([]byte(r), &v); err != nil {
			msg := fmt.Sprintf("decode %s item into %T: %v", kind, v, err)
			outs = append(outs, store.BatchOutcome{Index: i, Data: []byte(msg), Env: dead(i)})
			continue
		}
		idx, vals = append(idx, i), append(vals, v)
	}
	fail := func(msg string) {
		for _, i := range idx {
			outs = append(outs, store.BatchOutcome{Index: i, Data: []byte(msg), Env: dead(i)})
		}
	}
	if len(vals) > 0 {
		results, err := callBatch(ctx, fn, vals)
		if c := context.Cause(ctx); err != nil && c != nil && (errors.Is(c, ErrShutdown) || errors.Is(c, ErrLeaseLost) || errors.Is(c, ErrCancelled)) {
			// Failed as the worker stops, lost its lease or was cancelled:
			// the worker decides (hand back, drop, cancel). A run that
			// succeeded meanwhile is recorded below all the same.
			return nil, err
		}
		var be BatchErrors
		switch {
		case err != nil && !errors.As(err, &be):
			if errors.Is(context.Cause(ctx), errAttemptTimeout) {
				err = fmt.Errorf("batch timed out after %v: %w", time.Duration(j.env.TimeoutMs)*time.Millisecond, err)
			}
			var perm *PermanentError
			if !errors.As(err, &perm) && j.env.Attempt < j.env.MaxAttempts {
				return nil, err // the whole batch runs again
			}
			fail(err.Error())
		case len(results) != len(vals) && be == nil:
			fail(fmt.Sprintf("%s batch handler returned %d results for %d items", kind, len(results), len(vals)))
		default:
			for n, i := range idx {
				if e := be[n]; e != nil {
					outs = append(outs, store.BatchOutcome{Index: i, Data: []byte(e.Error()), Env: dead(i)})
					continue
				}
				if n >= len(results) {
					msg := fmt.Sprintf("%s batch handler returned no result for item %d", kind, n)
					outs = append(outs, store.BatchOutcome{Index: i, Data: []byte(msg), Env: dead(i)})
					continue
				}
				b, err := codec.Marshal(results[n])
				if err != nil {
					msg := fmt.Sprintf("encode %s result %T: %v", kind, results[n], err)
					outs = append(outs, store.BatchOutcome{Index: i, Data: []byte(msg), Env: dead(i)})
					continue
				}
				outs = append(outs, store.BatchOutcome{Index: i, OK: true, Data: b})
			}
		}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	n, err := store.EndBatch(rctx, w.rdb, q, w.cfg.Name, j.entry, j.dlv, j.key, j.env.Attempt, j.env.RetainMs, outs, marked)
	switch {
	case err != nil:
		// Not recorded: the batch runs again after its lease.
		w.log.Error("record batch; it runs again after its lease", slog.String("task", keys.TaskID(q.Name, j.key)), slog.Any("err", err))
	case n == 0:
		w.log.Warn("lease lost before the batch was recorded; another worker runs it", slog.String("task", keys.TaskID(q.Name, j.key)))
	case n == 2:
		w.drainOutbox(j.q)
	}
	return nil, errRecorded
}

// callBatch runs fn, turning a panic into a *PanicError.
func callBatch[In, Out any](ctx context.Context, fn func(context.Context, []In) ([]Out, error), vals []In) (out []Out, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: string(debug.Stack())}
		}
	}()
	return fn(ctx, vals)
}
