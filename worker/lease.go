package worker

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// watchdogLoop cancels (cause ErrLeaseLost) every handler whose lease end,
// pushed forward by each heartbeat that gets through, has passed: the
// handler stops before another worker may take its task over.
func (w *Worker) watchdogLoop(ctx context.Context) {
	t := time.NewTicker(max(w.cfg.Lease/20, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m := mono(now)
			w.inflightMu.Lock()
			for _, j := range w.inflight {
				if j.leaseEnd.Load() < m {
					j.cancel(ErrLeaseLost)
				}
			}
			w.inflightMu.Unlock()
		}
	}
}

// recentCancelTTL is how long a cancel request for an entry this worker had
// not dispatched yet is remembered.
const recentCancelTTL = 10 * time.Second

// controlLoop receives cancel requests for running tasks and cancels their
// handlers (cause ErrCancelled). A request lost while the connection is down
// is caught by the next heartbeat.
func (w *Worker) controlLoop(ctx context.Context) {
	for {
		// Not ctx: shutdown ends a Receive by closing w.ctl.
		msg, err := w.ctl.Receive(context.Background())
		if err != nil {
			if !pause(ctx, 50*time.Millisecond) {
				return
			}
			continue
		}
		m, ok := msg.(*redis.Message)
		if !ok {
			continue
		}
		q := w.ctlQueue(m.Channel)
		if q == nil {
			continue
		}
		if m.Payload == keys.PauseNotice {
			w.pauseNotice()
			continue
		}
		k := jobKey{q.keys.Name, m.Payload}
		w.inflightMu.Lock()
		j := w.inflight[k]
		if j == nil {
			// Read but not dispatched yet, perhaps: dispatch looks here.
			w.recentCancels[k] = time.Now()
			for ok, at := range w.recentCancels {
				if time.Since(at) > recentCancelTTL {
					delete(w.recentCancels, ok)
				}
			}
		}
		w.inflightMu.Unlock()
		if j != nil {
			j.cancel(ErrCancelled)
		}
	}
}

// beatsInFlight bounds how many rounds of heartbeats may be under way at
// once.
const beatsInFlight = 4

// heartbeatLoop starts a round of heartbeats every Lease/4, each on a
// goroutine of its own: a call stuck on a dead pooled connection (go-redis
// reads it until its ReadTimeout, whatever the ctx says, unless the client
// has ContextTimeoutEnabled) does not hold up the next rounds, which take
// other connections. A lease is only ever extended by a heartbeat that got
// through (see watchdogLoop).
func (w *Worker) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.Lease / 4)
	defer t.Stop()
	var rounds sync.WaitGroup
	defer rounds.Wait()
	inFlight := make(chan struct{}, beatsInFlight)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case inFlight <- struct{}{}:
		default:
			w.log.Error("heartbeats are stuck in Redis calls; handlers are cancelled before their leases end unless one gets through",
				slog.Int("rounds", beatsInFlight))
			continue
		}
		rounds.Add(1)
		go func() {
			defer rounds.Done()
			defer func() { <-inFlight }()
			w.heartbeatRound()
		}()
	}
}

// heartbeatRound extends the leases, and limits' slots, of every job in
// flight.
func (w *Worker) heartbeatRound() {
	byQueue := map[*queue][]*job{}
	w.inflightMu.Lock()
	for _, j := range w.inflight {
		if !j.isLost() {
			byQueue[j.q] = append(byQueue[j.q], j)
		}
	}
	w.inflightMu.Unlock()
	var all []*job
	for q, js := range byQueue {
		all = append(all, js...)
		for len(js) > 0 {
			part := js[:min(len(js), 1000)]
			js = js[len(part):]
			w.heartbeat(q, part)
		}
	}
	w.renewSlots(all)
}

func (w *Worker) heartbeat(q *queue, js []*job) {
	leases := make([]store.Lease, len(js))
	tasks := make([]string, len(js))
	for i, j := range js {
		leases[i] = j.lease()
		tasks[i] = j.key
	}
	sent := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Lease/4)
	defer cancel()
	beats, err := store.HeartbeatWithin(ctx, w.rdb, q.keys, w.cfg.Name, w.cfg.Lease.Milliseconds(), leases, tasks)
	if err != nil {
		w.log.Error("heartbeat failed; handlers are cancelled before their leases end unless one gets through",
			slog.String("queue", q.keys.Name), slog.Any("err", err))
		return
	}
	until := mono(sent) + int64(w.leaseGuard())
	for i, j := range js {
		if beats[i] != store.BeatLost {
			j.extendLease(until)
			if beats[i] == store.BeatCancelled {
				j.cancel(ErrCancelled)
			}
		} else if !j.isRecording() {
			w.log.Warn("lease lost; cancelling the handler", slog.String("task", keys.TaskID(q.keys.Name, j.key)))
			j.markLost()
		}
	}
}

// reclaim takes up entries stranded under this worker's own consumer (see
// adopt), then takes over entries whose lease ended, up to n in all, across
// the queues, and dispatches them. It returns how many of the n slots it
// used.
func (w *Worker) reclaim(ctx context.Context, n int) int {
	used := 0
	for _, q := range w.queueList() {
		if used < n {
			used += w.adopt(ctx, q, n-used)
		}
		for pass := 0; pass < 10 && used < n; pass++ {
			sent := time.Now()
			next, claimed, err := store.Reclaim(ctx, w.rdb, q.keys, w.cfg.Name, w.cfg.Lease.Milliseconds(), q.cursor, n-used,
				newOpID(), w.markers)
			if err != nil {
				if ctx.Err() == nil {
					w.log.Error("reclaim expired leases", slog.String("queue", q.keys.Name), slog.Any("err", err))
				}
				break
			}
			q.cursor = next
			got := make([]delivered, len(claimed))
			for i, c := range claimed {
				got[i] = delivered{q: q, entry: c.EntryID, raw: string(c.Envelope), hasM: len(c.Envelope) > 0, dlv: c.Deliveries,
					other: fmt.Sprint(map[string]any{"entry": c.EntryID})}
			}
			if len(got) > 0 {
				w.log.Info("took over tasks whose lease ended", slog.String("queue", q.keys.Name), slog.Int("count", len(got)))
				w.markCancelled(ctx, q, got)
			}
			used += w.dispatchAll(ctx, got, n-used, sent)
			if next == "0-0" {
				break
			}
		}
	}
	return used
}

// markCancelled looks up, in one round trip, which of the taken-over
// entries got belongs to a task with a cancel request: such a request was sent
// to a worker that died, and reached nobody. On error none is marked (the
// heartbeat looks again).
func (w *Worker) markCancelled(ctx context.Context, q *queue, got []delivered) {
	tasks := make([]string, len(got))
	for i, d := range got {
		tasks[i] = d.entry
		if env, err := codec.DecodeEnvelope([]byte(d.raw)); err == nil && env.Key != "" {
			tasks[i] = env.Key
		}
	}
	cx, err := store.CancelRequested(ctx, w.rdb, q.keys, tasks)
	if err != nil {
		return
	}
	for i := range got {
		got[i].cancelled = cx[i]
	}
}

// endedRun is a run that ended here without its outcome recorded.
type endedRun struct {
	dlv int64
	at  time.Time
}

// adoptIdle is how long an entry must have been idle under this worker's
// consumer, unknown to it, before it takes the entry up (see adopt): past
// the moments between a read's reply and the dispatch of what it returned.
func (w *Worker) adoptIdle() time.Duration {
	return min(max(w.cfg.Lease/10, 20*time.Millisecond), time.Second)
}

// adopt takes up, in q, up to n entries pending under this worker's own
// consumer that it does not run: the reply of the read or reclaim that
// delivered them was lost, and go-redis' resend did not return them (a
// read of new entries returns newer ones; a reclaim finds them idle no
// more). Left alone, such an entry would wait out a whole lease, then be
// taken over with one more delivery counted toward MaxDeliveries. Only
// entries delivered since Start are adopted (a restarted worker of the
// same name leaves those of its previous life to their lease), and none
// that ran here under the same token and ended without an outcome
// recorded; adopt.lua fences each by its token and keeps it. It returns
// how many of the n slots it used.
func (w *Worker) adopt(ctx context.Context, q *queue, n int) int {
	sent := time.Now()
	since := sent.Sub(w.started)
	idle := w.adoptIdle()
	if since <= idle {
		return 0
	}
	ps, err := store.OwnPending(ctx, w.rdb, q.keys, w.cfg.Name, idle.Milliseconds(), w.cfg.Concurrency+100)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Error("list own pending entries", slog.String("queue", q.keys.Name), slog.Any("err", err))
		}
		return 0
	}
	var leases []store.Lease
	w.inflightMu.Lock()
	for k, e := range w.ended {
		if sent.Sub(e.at) > 2*w.cfg.Lease {
			delete(w.ended, k) // idle past its lease by now: adopt.lua skips it
		}
	}
	for _, p := range ps {
		k := jobKey{q.keys.Name, p.EntryID}
		e, ended := w.ended[k]
		// The entry's idle time is Redis' since its delivery; since is
		// this process' since Start, read before XPENDING ran: an entry
		// delivered before Start is idle longer.
		if w.inflight[k] != nil || ended && e.dlv == p.Deliveries || time.Duration(p.IdleMs)*time.Millisecond >= since {
			continue
		}
		leases = append(leases, store.Lease{EntryID: p.EntryID, Deliveries: p.Deliveries})
		if len(leases) == n {
			break
		}
	}
	w.inflightMu.Unlock()
	if len(leases) == 0 {
		return 0
	}
	sent = time.Now()
	adopted, err := store.Adopt(ctx, w.rdb, q.keys, w.cfg.Name, idle.Milliseconds(), w.cfg.Lease.Milliseconds(), leases)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Error("take up own pending entries", slog.String("queue", q.keys.Name), slog.Any("err", err))
		}
		return 0
	}
	got := make([]delivered, len(adopted))
	for i, c := range adopted {
		got[i] = delivered{q: q, entry: c.EntryID, raw: string(c.Envelope), hasM: len(c.Envelope) > 0, dlv: c.Deliveries,
			other: fmt.Sprint(map[string]any{"entry": c.EntryID})}
	}
	if len(got) == 0 {
		return 0
	}
	w.log.Warn("took up tasks delivered here whose delivery was lost on the way", slog.String("queue", q.keys.Name), slog.Int("count", len(got)))
	w.markCancelled(ctx, q, got)
	return w.dispatchAll(ctx, got, n, sent)
}

// newOpID returns 128 random bits, to name one resend-safe call.
func newOpID() string {
	return strconv.FormatUint(rand.Uint64(), 36) + "." + strconv.FormatUint(rand.Uint64(), 36)
}
