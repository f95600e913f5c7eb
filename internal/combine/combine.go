// Package combine lets concurrent requests share round trips: a Combiner
// queues the requests that arrive while its batches are in flight, and the
// next caller to lead sends the queued ones in one batch.
//
// A caller leads when it arrives to a free leader slot (Config.MaxLeaders
// slots; a lone caller sends at once, so sequential calls pay no extra
// latency) or when a leader that is done hands it the lead. A leader sends
// one batch holding its own request and the oldest queued ones, answers
// every request of it, then hands the lead to the oldest request still
// queued: no caller serves others beyond one batch.
//
// Cancellation. The ctx of Do decides only while the request waits in the
// queue (a caller arriving to a free slot sends its request, whatever its
// ctx):
//   - a request whose ctx ends while it is queued, or as the lead is handed
//     to it, is withdrawn: it is never sent, Do returns ctx.Err(), and a
//     lead handed to it passes on to the next queued request;
//   - a request whose ctx ends once a leader took it into a batch is being
//     sent: Do waits for its answer, which stands (a write that was done is
//     reported), unless Config.DropInFlight is set: then Do returns
//     ctx.Err() at once and the answer is dropped (the caller's requests
//     must then be safe to have happened unreported);
//   - a leader's batch is sent with the leader's ctx without its
//     cancellation, bounded by Config.Timeout: the leader's ctx ending does
//     not cut the requests of others, and the leader waits for its batch.
//
// Errors and panics. The send function answers each request of its batch
// (Call.Res, Call.Err); an error it returns is the answer of every request
// of the batch. If it panics, Do panics with a *PanicError (the value and
// the stack) in the goroutine of every caller of the batch that waits for
// its answer; if it exits its goroutine (runtime.Goexit), the other
// callers of the batch get ErrGoexit. Either way the lead passes on and the Combiner stays usable.
package combine

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"
)

// Config tunes a Combiner.
type Config struct {
	// MaxLeaders is how many batches may be in flight at once (0 means
	// 1): more let the server work on one while the next is sent.
	MaxLeaders int

	// MaxBatch is the most requests one batch holds; 0 means no bound.
	MaxBatch int

	// Timeout bounds the sending of one batch; 0 means no bound but the
	// send function's own.
	Timeout time.Duration

	// DropInFlight makes Do return ctx.Err() as soon as its ctx ends,
	// even when its request is being sent (its answer is then dropped).
	// By default Do waits for the answer of a request that was taken.
	DropInFlight bool
}

// Call is one request in a batch: the send function reads Req and sets Res
// and Err.
type Call[Req, Res any] struct {
	Req Req
	Res Res
	Err error

	state state              // under Combiner.mu until taken into a batch
	wake  chan struct{}      // closed once: the lead is handed to it, or it is answered
	self  [1]*Call[Req, Res] // the batch of a leader sending alone
}

type state uint8

const (
	queued  state = iota // waits in the queue
	leading              // handed the lead, not yet sent
	taken                // in a batch, sent or being sent
)

// SendFunc sends a batch of one or more calls (at most Config.MaxBatch) and
// answers each; a non-nil error is the answer of every call of the batch.
type SendFunc[Req, Res any] func(ctx context.Context, batch []*Call[Req, Res]) error

// Combiner combines concurrent requests into batches. It is safe for
// concurrent use.
type Combiner[Req, Res any] struct {
	cfg  Config
	send SendFunc[Req, Res]

	mu      sync.Mutex
	pending []*Call[Req, Res] // oldest first
	leaders int               // leader slots taken: batches in flight, and leads handed on
}

// New returns a Combiner that sends its batches with send.
func New[Req, Res any](cfg Config, send SendFunc[Req, Res]) *Combiner[Req, Res] {
	if send == nil {
		panic("combine.New: send is nil")
	}
	if cfg.MaxLeaders < 1 {
		cfg.MaxLeaders = 1
	}
	if cfg.MaxBatch < 0 {
		cfg.MaxBatch = 0
	}
	return &Combiner[Req, Res]{cfg: cfg, send: send}
}

// ErrGoexit is the answer of the requests of a batch whose send function
// exited its goroutine (runtime.Goexit) instead of returning.
var ErrGoexit = errors.New("combine: the send function exited its goroutine")

// PanicError is what Do panics with when the send function of its batch
// panicked.
type PanicError struct {
	Value any    // what the send function panicked with
	Stack []byte // the stack of the panic, in the leader's goroutine
}

func (p *PanicError) Error() string {
	return fmt.Sprintf("combine: the send function panicked: %v\n\n%s", p.Value, p.Stack)
}

// Unwrap returns the value panicked with when it is an error.
func (p *PanicError) Unwrap() error {
	err, _ := p.Value.(error)
	return err
}

// Do sends req, in a batch with other callers' requests, and returns its
// answer. See the package doc for what ctx decides.
func (cb *Combiner[Req, Res]) Do(ctx context.Context, req Req) (Res, error) {
	c := &Call[Req, Res]{Req: req}
	cb.mu.Lock()
	if cb.leaders < cb.cfg.MaxLeaders {
		cb.leaders++
		batch := cb.take(c)
		cb.mu.Unlock()
		cb.lead(ctx, c, batch)
		return c.answer()
	}
	c.wake = make(chan struct{})
	cb.pending = append(cb.pending, c)
	cb.mu.Unlock()
	select {
	case <-c.wake:
	case <-ctx.Done():
		cb.mu.Lock()
		switch c.state {
		case queued:
			cb.remove(c)
			cb.mu.Unlock()
			var zero Res
			return zero, ctx.Err() // never sent
		case leading:
			// Handed the lead as ctx ended: withdrawn all the same, and
			// the lead goes on to the next request, or the queue would
			// stall.
			cb.handOn()
			cb.mu.Unlock()
			var zero Res
			return zero, ctx.Err()
		}
		cb.mu.Unlock()
		if cb.cfg.DropInFlight {
			var zero Res
			return zero, ctx.Err()
		}
		<-c.wake // being sent: its answer stands
	}
	// Woken: the state was set before wake was closed, and no one
	// changes it since.
	if c.state == leading {
		cb.mu.Lock()
		batch := cb.take(c)
		cb.mu.Unlock()
		cb.lead(ctx, c, batch)
	}
	return c.answer()
}

func (c *Call[Req, Res]) answer() (Res, error) {
	if p, ok := c.Err.(*PanicError); ok {
		panic(p)
	}
	return c.Res, c.Err
}

// take returns the batch of c, the leader's call: c, then the oldest queued
// calls, as many as fit. It marks them taken. cb.mu is held.
//
// A queued call was queued before c, or c would not lead: calls queue only
// while every leader slot is taken, and a slot is given up only when none
// is queued, so a caller arriving to a free slot finds the queue empty.
func (cb *Combiner[Req, Res]) take(c *Call[Req, Res]) []*Call[Req, Res] {
	c.state = taken
	n := len(cb.pending)
	if cb.cfg.MaxBatch > 0 {
		n = min(n, cb.cfg.MaxBatch-1)
	}
	if n == 0 {
		c.self[0] = c
		return c.self[:]
	}
	batch := make([]*Call[Req, Res], 0, n+1)
	batch = append(batch, c)
	batch = append(batch, cb.pending[:n]...)
	for _, x := range cb.pending[:n] {
		x.state = taken
	}
	rest := copy(cb.pending, cb.pending[n:])
	clear(cb.pending[rest:])
	cb.pending = cb.pending[:rest]
	return batch
}

// lead sends batch, the batch of me, answers its calls and hands the lead
// on, whether send returns, panics or exits the goroutine.
func (cb *Combiner[Req, Res]) lead(ctx context.Context, me *Call[Req, Res], batch []*Call[Req, Res]) {
	returned := false
	defer func() {
		if !returned {
			var err error = ErrGoexit
			if v := recover(); v != nil {
				err = &PanicError{Value: v, Stack: debug.Stack()}
			}
			for _, x := range batch {
				x.Err = err
			}
		}
		for _, x := range batch {
			// me waits for nothing: a fresh leader has no wake, and a
			// handed one's was closed when it was handed the lead.
			if x != me {
				close(x.wake)
			}
		}
		cb.mu.Lock()
		cb.handOn()
		cb.mu.Unlock()
	}()
	sctx := context.WithoutCancel(ctx)
	if cb.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(sctx, cb.cfg.Timeout)
		defer cancel()
	}
	if err := cb.send(sctx, batch); err != nil {
		for _, x := range batch {
			x.Err = err
		}
	}
	returned = true
}

// handOn gives up a leader slot: the lead passes to the oldest queued call,
// if any. cb.mu is held.
func (cb *Combiner[Req, Res]) handOn() {
	if len(cb.pending) == 0 {
		cb.leaders--
		return
	}
	next := cb.pending[0]
	cb.pending[0] = nil
	cb.pending = cb.pending[1:]
	next.state = leading
	close(next.wake)
}

// remove takes queued call c out of the queue. cb.mu is held.
func (cb *Combiner[Req, Res]) remove(c *Call[Req, Res]) {
	for i, x := range cb.pending {
		if x == c {
			n := copy(cb.pending[i:], cb.pending[i+1:])
			cb.pending[i+n] = nil
			cb.pending = cb.pending[:i+n]
			return
		}
	}
}

// Idle reports whether no batch is in flight and no request waits: a
// request sent now by other means meets no batch of this Combiner.
func (cb *Combiner[Req, Res]) Idle() bool {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	return cb.leaders == 0 && len(cb.pending) == 0
}

// Queued reports how many requests wait in the queue.
func (cb *Combiner[Req, Res]) Queued() int {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	return len(cb.pending)
}

// Hold takes a leader slot as a caller arriving to a free one would, but
// sends nothing, so that tests can make requests queue up; it reports false
// when every slot is taken. release gives the slot up as a leader that is
// done does: it hands the lead to the oldest queued request, if any.
func (cb *Combiner[Req, Res]) Hold() (release func(), ok bool) {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	if cb.leaders >= cb.cfg.MaxLeaders {
		return nil, false
	}
	cb.leaders++
	var once sync.Once
	return func() {
		once.Do(func() {
			cb.mu.Lock()
			cb.handOn()
			cb.mu.Unlock()
		})
	}, true
}
