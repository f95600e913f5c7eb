package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// maxCancelDepth bounds how deep Cancel follows children.
const maxCancelDepth = 64

// Cancel cancels the task r names, then its unfinished descendants
// (client.Handle.Cancel documents what each state does). It returns the
// state the script reported: "cancelling" for a running task, an end state
// otherwise.
func (e *Engine) Cancel(ctx context.Context, r Ref) (string, error) {
	r, err := e.Resolve(ctx, r)
	if err != nil {
		return "", err
	}
	return e.cancel(ctx, r, 0)
}

func (e *Engine) cancel(ctx context.Context, r Ref, depth int) (string, error) {
	q := keys.ForQueue(r.Queue)
	retain := e.cfg.Retention.Milliseconds()
	st, err := store.Cancel(ctx, e.rdb, q, r.Key, retain, codec.ReasonCancelled)
	if err != nil {
		return "", err
	}
	if st == "" {
		return "", fmt.Errorf("cancel task %s: %w", r.ID(), ErrNotFound)
	}
	if depth < maxCancelDepth {
		kids, err := store.Kids(ctx, e.rdb, q, r.Key)
		if err != nil {
			return "", fmt.Errorf("cancel children of %s: %w", r.ID(), err)
		}
		for _, id := range kids {
			kr, err := RefOf(id)
			if err != nil {
				continue
			}
			if _, err := e.cancel(ctx, kr, depth+1); err != nil && !errors.Is(err, ErrNotFound) {
				return "", err
			}
		}
	}
	if st == StateCancelled {
		// Its continuations went to the outbox: start them now, since no
		// worker may serve this queue.
		if err := store.DrainOutbox(ctx, e.rdb, q, retain); err != nil {
			return st, err
		}
	}
	return st, nil
}

// ContinueWith registers args as a task that runs once the task r names has
// ended (client.Handle.ContinueWith documents it). opts.Queue defaults to
// r's queue and opts.ID to a fresh key. The Ref returned with an error, when
// its Key is set, names a continuation that exists.
func (e *Engine) ContinueWith(ctx context.Context, r Ref, args Args, opts *Opts, onlyOnSuccess bool) (Ref, error) {
	r, err := e.Resolve(ctx, r)
	if err != nil {
		return Ref{}, err
	}
	var o Opts
	if opts != nil {
		o = *opts
	}
	if o.Queue == "" {
		o.Queue = r.Queue
		if q, _, ok := keys.ParseShard(r.Queue); ok {
			o.Queue = q // placed on a shard by its own id
		}
	}
	generated := o.ID == ""
	if generated {
		o.ID = "c-" + strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
	}
	p, err := e.prepare(ctx, args, &o, extra{prev: r.ID()})
	if err != nil {
		return Ref{}, err
	}
	if generated {
		p.earlier = nil // a new id: no earlier task has it
	} else if len(p.earlier) > 0 {
		one := []prepared{p}
		if err := e.findEarlier(ctx, one); err != nil {
			return Ref{}, fmt.Errorf("continue %s: %w", r.ID(), err)
		}
		p = one[0]
	}
	// The task continued must exist (a typo'd id would wait forever).
	ts, err := e.Read(ctx, r)
	if err == nil && ts.State == "" {
		err = fmt.Errorf("task %s: %w", r.ID(), ErrNotFound)
	}
	if err != nil {
		return Ref{}, fmt.Errorf("continue %s: %w", r.ID(), err)
	}
	tq := keys.ForQueue(p.queue)
	if err := e.ensureGroup(ctx, tq); err != nil {
		return Ref{}, err
	}
	next := Ref{Queue: p.queue, Key: o.ID}
	created, err := store.CreateWaiting(ctx, e.rdb, tq, o.ID, p.task.Envelope, newOpID())
	if err != nil {
		return Ref{}, err
	}
	if !created {
		next.Dup = true
		// Registered before, or a call that failed halfway: register again
		// while it waits (a second registration activates it once all the
		// same); leave a task that is past waiting alone.
		ns, err := e.Read(ctx, next)
		if err == nil && ns.State == "" {
			err = fmt.Errorf("task %s: %w", next.ID(), ErrNotFound)
		}
		if err != nil {
			return next, err
		}
		if ns.State != StateWaiting {
			e.tell(ctx, []prepared{p}, []Ref{next})
			return next, nil
		}
	}
	q := keys.ForQueue(r.Queue)
	retain := e.cfg.Retention.Milliseconds()
	fired, err := store.AddContinuation(ctx, e.rdb, q, r.Key, store.ContSpec(p.queue, o.ID, onlyOnSuccess))
	if errors.Is(err, store.ErrUnknownTask) {
		// The task vanished (its record expired) since it was looked up:
		// the waiting continuation would wait forever; cancel it.
		_, _ = store.Cancel(ctx, e.rdb, tq, o.ID, retain, codec.ReasonCancelled)
		return Ref{}, fmt.Errorf("continue %s: %w", r.ID(), ErrNotFound)
	}
	if err != nil {
		return Ref{}, err
	}
	// Registered: it is a task now.
	e.tell(ctx, []prepared{p}, []Ref{next})
	if p.parent != "" && !next.Dup {
		// Registered from a handler: the continuation is also that task's
		// child, so cancelling the task reaches it.
		if err := e.addKids(ctx, []prepared{p}, []Ref{next}); err != nil {
			return next, err
		}
	}
	if fired {
		// The task had ended: start the continuation now rather than at
		// the next sweep of a worker or coordinator (every second). The
		// registration stands either way, so a failure here is only
		// logged: it may name another entry of the outbox.
		if err := store.DrainOutbox(ctx, e.rdb, q, retain); err != nil {
			e.cfg.Logger.Warn("continuation registered; starting it now failed, the sweeps of workers and coordinators start it",
				slog.String("task", next.ID()), slog.Any("err", err))
		}
	}
	return next, nil
}
