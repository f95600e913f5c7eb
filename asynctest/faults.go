package asynctest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/worker"
)

// ErrInjected is the error of an attempt FailNext failed.
var ErrInjected = errors.New("asynctest: injected failure")

// faults holds the failures to inject into the fleet's workers.
type faults struct {
	mu    sync.Mutex
	fails map[string][]*failure // by kind, in the order given
	loss  map[string][]*Loss    // by kind, in the order given
}

type failure struct {
	n   int
	err error
}

// takeFail takes one failure of kind, if one is due.
func (fs *faults) takeFail(kind string) (error, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	q := fs.fails[kind]
	if len(q) == 0 {
		return nil, false
	}
	f := q[0]
	f.n--
	if f.n == 0 {
		fs.fails[kind] = q[1:]
	}
	return f.err, true
}

// takeLoss takes the loss due for kind, if any.
func (fs *faults) takeLoss(kind string) *Loss {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	q := fs.loss[kind]
	if len(q) == 0 {
		return nil
	}
	fs.loss[kind] = q[1:]
	return q[0]
}

// FailNext makes the next n attempts of kind, on any of the fleet's
// workers, fail with err (ErrInjected when nil) without running the
// handler. Wrap err with worker.Permanent to fail them for good.
//
// The attempts fail as a handler's error fails them: each is retried
// (with the fleet's Backoff: at once, by default) until its task's
// MaxAttempts; the count is shared by the fleet's workers, and several
// calls for a kind add up, the first given used first. It holds for the
// workers started by the fleet (NewFleet, StartWorkers) only.
func (f *Fleet) FailNext(kind string, n int, err error) {
	f.t.Helper()
	if n < 1 {
		f.t.Fatalf("asynctest: FailNext(%q, %d): n must be at least 1", kind, n)
	}
	if err == nil {
		err = ErrInjected
	}
	f.faults.mu.Lock()
	defer f.faults.mu.Unlock()
	if f.faults.fails == nil {
		f.faults.fails = map[string][]*failure{}
	}
	f.faults.fails[kind] = append(f.faults.fails[kind], &failure{n: n, err: err})
}

// LosePoint is when LoseWorker cuts a worker off.
type LosePoint int

const (
	// LoseDuring cuts the worker off as the handler starts: the handler
	// runs, but its outcome is never recorded.
	LoseDuring LosePoint = iota
	// LoseAfter cuts the worker off once the handler returned, before its
	// outcome is recorded: the work was done, and is done again.
	LoseAfter
)

func (p LosePoint) String() string {
	switch p {
	case LoseDuring:
		return "LoseDuring"
	case LoseAfter:
		return "LoseAfter"
	}
	return fmt.Sprintf("LosePoint(%d)", int(p))
}

// Loss is a worker lost by LoseWorker.
type Loss struct {
	f    *Fleet
	kind string
	at   LosePoint
	done chan struct{} // closed once the worker was cut off

	// Set before done is closed.
	task string
	p    *proc
	err  error
}

// LoseWorker cuts off from Redis the worker that runs the next attempt of
// kind, at point at, as if its process died; its lease lapses and another
// worker of the fleet takes the task over.
//
// The worker's Redis client answers every command with a connection error
// from then on: its heartbeats fail, so its handler's ctx is cancelled
// (cause worker.ErrLeaseLost) shortly before the lease ends (at 4/5 of
// Lease), and it records no outcome. So that the take-over does not wait
// a whole Lease, the attempts pending under the lost worker are made to
// look as if their lease had ended at once (their delivery counts, the
// attempts' tokens, stay): the other workers take them over at their next
// look for lapsed leases (every Lease/4, 500ms with the kit's Lease), as
// they take over a dead worker's, and run them again with Task.Deliveries
// one higher. The lost worker's outcome, should it arrive later (Restore,
// or the fleet's cleanup, which connects it again to stop it), is fenced:
// the task keeps the outcome of the run that took it over.
//
// With a single worker nobody takes the task over: it waits, running, until
// Loss.Restore connects the worker again (which then takes up its own
// task afresh at its next look) or the test ends. Tasks of other kinds the
// lost worker was running are lost with it, and taken over too.
func (f *Fleet) LoseWorker(kind string, at LosePoint) *Loss {
	l := &Loss{f: f, kind: kind, at: at, done: make(chan struct{})}
	f.faults.mu.Lock()
	defer f.faults.mu.Unlock()
	if f.faults.loss == nil {
		f.faults.loss = map[string][]*Loss{}
	}
	f.faults.loss[kind] = append(f.faults.loss[kind], l)
	return l
}

// Wait waits until the loss happened and returns the id of the task whose
// worker was lost. It fails the test after the fleet's WaitTimeout.
func (l *Loss) Wait() string {
	l.f.t.Helper()
	t := time.NewTimer(l.f.opts.WaitTimeout)
	defer t.Stop()
	select {
	case <-l.done:
	case <-t.C:
		l.f.t.Fatalf("asynctest: LoseWorker(%q, %v): no attempt of %s ran within %v", l.kind, l.at, l.kind, l.f.opts.WaitTimeout)
	}
	if l.err != nil {
		l.f.t.Fatalf("asynctest: LoseWorker(%q, %v): %v", l.kind, l.at, l.err)
	}
	return l.task
}

// Worker returns the lost worker, once Wait returned.
func (l *Loss) Worker() *worker.Worker {
	select {
	case <-l.done:
		return l.p.w
	default:
		return nil
	}
}

// Restore connects the lost worker to Redis again, once Wait returned: it
// goes on as a worker that was cut off for a while does (what it failed to
// record is fenced if the task was taken over).
func (l *Loss) Restore() {
	l.f.t.Helper()
	l.Wait()
	l.p.line.restore()
}

// middleware is the kit's outermost middleware on worker p: it injects
// FailNext's failures and LoseWorker's losses.
func (f *Fleet) middleware(p *proc) worker.Middleware {
	return func(next worker.Handler) worker.Handler {
		return worker.HandlerFunc(func(ctx context.Context, a *worker.Attempt) ([]byte, error) {
			if err, ok := f.faults.takeFail(a.Kind); ok {
				return nil, err
			}
			l := f.faults.takeLoss(a.Kind)
			if l == nil {
				return next.Handle(ctx, a)
			}
			if l.at == LoseDuring {
				f.lose(p, l, a.ID)
				return next.Handle(ctx, a)
			}
			res, err := next.Handle(ctx, a)
			f.lose(p, l, a.ID)
			return res, err
		})
	}
}

// lose cuts worker p off and lapses the leases of what it holds.
func (f *Fleet) lose(p *proc, l *Loss, task string) {
	defer close(l.done)
	l.task, l.p = task, p
	p.line.cut()
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.WaitTimeout)
	defer cancel()
	var errs []error
	for q := range p.cfg.Queues {
		if _, err := store.LapseLeases(ctx, f.rdb, keys.ForQueue(q), p.cfg.Name, p.cfg.Lease.Milliseconds()); err != nil {
			errs = append(errs, err)
		}
	}
	l.err = errors.Join(errs...)
}
