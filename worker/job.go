package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/store"
)

// job is one delivered entry from the moment it is read until its outcome is
// recorded (or given up). It holds a slot all that time and is heartbeated.
type job struct {
	q       *queue
	entry   string
	dlv     int64
	key     string
	env     *codec.Envelope
	handler handlerFunc
	ctx     context.Context
	cancel  context.CancelCauseFunc

	// part and partNext are the partition and the task behind it that the
	// entry named (read entries only; a taken-over one names none): its
	// end steps the partition in complete.lua when the list agrees.
	part, partNext string

	// leaseEnd is when the handler must be cancelled unless a heartbeat
	// gets through first: monotonic nanoseconds (see mono).
	leaseEnd atomic.Int64

	mu        sync.Mutex
	lost      bool
	recording bool       // its outcome is on the way to Redis
	acked     bool       // its outcome is recorded (the entry acked)
	slot      bool       // holds a slot, given back once its handler returned (or by finish)
	hold      bool       // holds a hold (its entry is pending here), given back by finish
	limits    []*limiter // fleet-wide limits whose slots it holds

	// took is how long its handler ran (0 when none ran), set before
	// its outcome is sent to the completer, which reports it when the
	// lease turns out lost.
	took time.Duration
}

// extendLease moves j's lease end to until unless it is later already (a
// round of heartbeats sent after this one got through first).
func (j *job) extendLease(until int64) {
	for {
		cur := j.leaseEnd.Load()
		if cur >= until || j.leaseEnd.CompareAndSwap(cur, until) {
			return
		}
	}
}

func (j *job) lease() store.Lease { return store.Lease{EntryID: j.entry, Deliveries: j.dlv} }

// markLost cancels the handler: the lease is gone.
func (j *job) markLost() {
	j.mu.Lock()
	j.lost = true
	j.mu.Unlock()
	j.cancel(ErrLeaseLost)
}

// isRecording reports whether j's outcome was handed to the completer (a
// heartbeat that finds it acked is then no news).
func (j *job) isRecording() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.recording
}

func (j *job) isLost() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.lost
}

// leaseGuard is how long after a heartbeat was sent its handler is
// cancelled should no later one get through: a fifth of the lease before
// it ends.
func (w *Worker) leaseGuard() time.Duration { return w.cfg.Lease - w.cfg.Lease/5 }

// procStart anchors mono.
var procStart = time.Now()

// mono returns t as nanoseconds on the monotonic clock since procStart.
func mono(t time.Time) int64 { return int64(t.Sub(procStart)) }

// outcome is what happens to a job; drop means record nothing (lease lost).
// Every outcome to record is built by ends, from one of store's outcomes.
type outcome struct {
	j    *job
	c    store.Completion
	drop bool

	after func() // runs once the outcome is recorded
}

// ends returns the outcome o of j's attempt, fenced by j's token.
func (j *job) ends(o store.Outcome) *outcome {
	c := store.Completion{EntryID: j.entry, Deliveries: j.dlv, Key: j.key, Outcome: o, Part: j.part, Next: j.partNext}
	if j.env != nil {
		c.Attempt = j.env.Attempt
		c.Group = j.env.Group
	}
	return &outcome{j: j, c: c}
}

// next encodes the envelope of the entry that continues j's task, after
// edit (if any) changed it: it names the task's key and carries the
// deliveries of this entry that ended without an outcome into Lost, so
// that hand-backs and retries never reset the poison count. Every entry
// that continues a task (a retry, a hand-back) is encoded here.
func (j *job) next(edit func(*codec.Envelope)) []byte {
	next := *j.env
	next.Key = j.key
	next.Lost += int(j.dlv - 1)
	if edit != nil {
		edit(&next)
	}
	return codec.AppendEnvelope(nil, &next)
}

// handBack hands j's task back after delay (0: straight to the stream),
// its envelope changed by edit (if any).
func (j *job) handBack(delay time.Duration, edit func(*codec.Envelope)) *outcome {
	var env []byte
	if j.env != nil {
		env = j.next(edit)
	}
	return j.ends(store.Park(env, delay))
}

// park hands j's task back, after delay (0: straight to the stream); a
// delayed hand-back (no handler here) counts in Parked.
func (j *job) park(delay time.Duration) *outcome {
	if delay <= 0 {
		return j.handBack(delay, nil)
	}
	return j.handBack(delay, func(e *codec.Envelope) { e.Parked++ })
}

// lapsed hands back j's task, whose lease lapsed here, straight to the
// stream. The delivery counts as one that ended without an outcome (as it
// would, taken over after its lease), so a task whose runs keep outliving
// their leases still meets the poison limit.
func (j *job) lapsed() *outcome {
	return j.handBack(0, func(e *codec.Envelope) { e.Lost++ })
}

// cancelled ends j's task as cancelled, without retry.
func (j *job) cancelled(reason string) *outcome {
	return j.ends(store.Cancelled(j.env.RetainMs, reason))
}
