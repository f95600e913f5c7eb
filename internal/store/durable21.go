package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// Issue 21: durable enqueue. Redis replicates asynchronously: a master
// answers a write before its replicas have it, and a replica promoted after
// the master died has only what reached it. WAIT n t blocks the connection
// it is sent on until n replicas acknowledged every write that connection
// made before it (the master's replication offset after the connection's
// last propagated write), or t passed, and returns how many did.
//
// RunCallsDurable runs enqueue script calls and then WAIT on one connection
// of the master that holds their keys. Two things make the count mean "the
// master's data as of our write is on n replicas", whatever happened on the
// way:
//
//   - a replication mark: a SET of a throwaway key of the queue's slot (an
//     op marker key under a fresh id, living MarkerGrace), sent after the
//     calls in the same pipeline. It is always propagated, so WAIT waits
//     for an offset past the calls' writes even when the calls wrote
//     nothing on this connection: a resend on a new connection that found
//     its first run's work done (an op marker, an entry id taken), or a
//     duplicate id whose task another client wrote a moment ago;
//   - the same connection: go-redis' redis.Conn keeps one connection, and
//     does not resend on another one after a network error; this file does
//     (a new connection, the calls and the mark again: the enqueue scripts
//     are resend-safe), at most as many times as the client's MaxRetries,
//     so that the resends stay within the window the op markers cover
//     (ResendWindow).
//
// On a *redis.ClusterClient the connection is one of the master that
// serves the first key of the calls' queue (MasterForKey): a WAIT sent
// through the cluster client has no key and would go to any node. A MOVED
// or ASK answer (the slot moved: a failover, a resharding) means the script
// did not run there; the cluster client is asked to reload its slots and
// the calls are sent to the new master, at most MaxRedirects times.

// Durability is how many replicas must have a task's writes before an
// enqueue returns, and how long to wait for them. Replicas 0: no waiting.
type Durability struct {
	Replicas int
	Timeout  time.Duration
}

// ErrNotReplicated is matched (errors.Is) by a NotReplicatedError.
var ErrNotReplicated = errors.New("not confirmed on enough replicas")

// NotReplicatedError is the error of an enqueue whose writes the master
// accepted (the tasks are there and will run) but fewer replicas than
// asked confirmed within the timeout: if the master fails now, the replica
// promoted in its place may not have them, and they would be lost.
type NotReplicatedError struct {
	Want  int           // replicas asked for
	Acked int           // replicas that confirmed; -1: unknown (Err says why)
	Wait  time.Duration // how long WAIT waited
	Addr  string        // the master's address, as the client knows it
	Err   error         // why the count is unknown, or nil
}

func (e *NotReplicatedError) Error() string {
	if e.Acked < 0 {
		return fmt.Sprintf("accepted by the master %s, but whether %d replica(s) have it is unknown (%v): it may run, and may be lost in a failover: %v",
			e.Addr, e.Want, e.Err, ErrNotReplicated)
	}
	return fmt.Sprintf("accepted by the master %s, but %d of %d replica(s) confirmed it within %v: it may run, and may be lost in a failover: %v",
		e.Addr, e.Acked, e.Want, e.Wait, ErrNotReplicated)
}

// Is matches ErrNotReplicated.
func (e *NotReplicatedError) Is(target error) bool { return target == ErrNotReplicated }

// Unwrap returns why the count is unknown, or nil.
func (e *NotReplicatedError) Unwrap() error { return e.Err }

// DurableCall is a Call that RunCallsDurable sends, with the queue whose
// slot it writes (the replication mark goes there), and what WAIT said.
type DurableCall struct {
	Call  *Call
	Queue keys.Queue
	// Short is set when the call's writes ran (Call.Err() is nil) but
	// were not confirmed on enough replicas: a *NotReplicatedError.
	Short error
}

// waitNode is a client of one server whose connections can be held: a
// *redis.Client, or a type embedding one.
type waitNode interface {
	redis.Scripter
	Conn() *redis.Conn
	Options() *redis.Options
}

var _ waitNode = (*redis.Client)(nil)

// CheckDurable reports whether rdb can run durable enqueues: a
// *redis.Client (or a type embedding one) or a *redis.ClusterClient, whose
// connections to one master can be held for WAIT. A *redis.Ring, or a
// wrapper whose type hides its connections, cannot.
func CheckDurable(rdb redis.UniversalClient) error {
	switch rdb.(type) {
	case *redis.ClusterClient, waitNode:
		return nil
	}
	return fmt.Errorf("a durable enqueue (WAIT) needs a *redis.Client or a *redis.ClusterClient, whose connections it can hold; this client is a %T", rdb)
}

// RunCallsDurable sends calls as RunCalls does, each followed on its
// connection by a replication mark and WAIT d.Replicas d.Timeout (see the
// file's comment), and sets each call's reply and error, and its Short. It
// returns the first call's error, or nil: a Short is not an error of the
// call. Calls of queues on several masters go to them at once.
func RunCallsDurable(ctx context.Context, rdb redis.UniversalClient, calls []*DurableCall, d Durability) error {
	cc, cluster := rdb.(*redis.ClusterClient)
	redirects := 0
	if cluster {
		redirects = max(cc.Options().MaxRedirects, 0)
	}
	pending := calls
	for try := 0; ; try++ {
		byNode := map[waitNode][]*DurableCall{}
		var order []waitNode
		for _, c := range pending {
			c.Short = nil
			var node waitNode
			if cluster {
				n, err := cc.MasterForKey(ctx, c.Call.keys[0])
				if err != nil {
					c.Call.res, c.Call.err = nil, err
					continue
				}
				node = n
			} else if n, ok := rdb.(waitNode); ok {
				node = n
			} else {
				c.Call.res, c.Call.err = nil, CheckDurable(rdb)
				continue
			}
			if _, ok := byNode[node]; !ok {
				order = append(order, node)
			}
			byNode[node] = append(byNode[node], c)
		}
		var wg sync.WaitGroup
		for _, node := range order {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runOnNode(ctx, node, byNode[node], d)
			}()
		}
		wg.Wait()
		if !cluster {
			break
		}
		var moved []*DurableCall
		var target string
		for _, c := range pending {
			if c.Call.err == nil {
				continue
			}
			if addr, ok := redirected(c.Call.err); ok {
				moved = append(moved, c)
				target = addr
			} else if !isReply(c.Call.err) {
				// The node did not answer (a master that died): have
				// the cluster client read the slots again, so that the
				// next call finds the replica promoted in its place.
				cc.ReloadState(ctx)
			}
		}
		if len(moved) == 0 || try >= redirects || ctx.Err() != nil {
			break
		}
		awaitSlots(ctx, cc, moved[len(moved)-1].Call.keys[0], target)
		pending = moved
	}
	for _, c := range calls {
		if c.Call.err != nil {
			return c.Call.err
		}
	}
	return nil
}

// runOnNode runs calls, a mark and WAIT on one connection of node, again on
// a new connection after a network error (the calls are resend-safe), at
// most as many times as node's MaxRetries allow.
func runOnNode(ctx context.Context, node waitNode, calls []*DurableCall, d Durability) {
	opt := node.Options()
	tries := 1 + max(opt.MaxRetries, 0)
	loaded := false
	mark := calls[0].Queue.Op("w." + newOpID())
	for try := 0; ; try++ {
		cn := node.Conn()
		var set *redis.StatusCmd
		_, err := cn.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, c := range calls {
				c.Call.res = c.Call.s.EvalSha(ctx, p, c.Call.keys, c.Call.args...)
			}
			set = p.Set(ctx, mark, "", MarkerGrace)
			return nil
		})
		if err != nil && !loaded && strings.Contains(err.Error(), "NOSCRIPT") {
			// A promoted replica, or a restarted master, without the
			// scripts: load them there and send everything again.
			_ = cn.Close()
			loaded = true
			if lerr := script.Load(ctx, node); lerr != nil {
				for _, c := range calls {
					c.Call.res, c.Call.err = nil, lerr
				}
				return
			}
			try--
			continue
		}
		if err != nil && !isReply(err) && try+1 < tries && ctx.Err() == nil {
			// The connection broke: whether the calls ran is unknown.
			_ = cn.Close()
			if !backoff(ctx, opt, try) {
				setErrs(calls, err)
				return
			}
			continue
		}
		setErrs(calls, err)
		ran := false
		for _, c := range calls {
			ran = ran || c.Call.err == nil
		}
		if !ran {
			_ = cn.Close()
			return
		}
		var short error
		if err := set.Err(); err != nil {
			// The mark was refused (OOM, say): WAIT would not cover a
			// resend that wrote nothing.
			short = &NotReplicatedError{Want: d.Replicas, Acked: -1, Addr: opt.Addr, Err: fmt.Errorf("replication mark: %w", err)}
		} else {
			short = await(ctx, cn, node, mark, d, tries)
		}
		_ = cn.Close()
		for _, c := range calls {
			if c.Call.err == nil {
				c.Short = short
			}
		}
		return
	}
}

// await sends WAIT on cn, whose last write was the mark; if its reply is
// lost, it sends the mark and WAIT again on a new connection (the mark's
// write is again past the calls' writes), within tries in all. It returns
// nil when d.Replicas confirmed, else a *NotReplicatedError.
func await(ctx context.Context, cn *redis.Conn, node waitNode, mark string, d Durability, tries int) error {
	opt := node.Options()
	n, err := cn.Wait(ctx, d.Replicas, d.Timeout).Result()
	for try := 1; err != nil && !isReply(err) && try < tries && ctx.Err() == nil; try++ {
		if !backoff(ctx, opt, try-1) {
			break
		}
		func() {
			c := node.Conn()
			defer c.Close()
			if err = c.Set(ctx, mark, "", MarkerGrace).Err(); err == nil {
				n, err = c.Wait(ctx, d.Replicas, d.Timeout).Result()
			}
		}()
	}
	switch {
	case err != nil:
		return &NotReplicatedError{Want: d.Replicas, Acked: -1, Addr: opt.Addr, Err: fmt.Errorf("WAIT: %w", err)}
	case int(n) < d.Replicas:
		return &NotReplicatedError{Want: d.Replicas, Acked: int(n), Wait: d.Timeout, Addr: opt.Addr}
	}
	return nil
}

// setErrs sets each call's error from its reply, or the pipeline's err for
// a call whose command got no reply.
func setErrs(calls []*DurableCall, err error) {
	for _, c := range calls {
		c.Call.err = c.Call.res.Err()
		if c.Call.err == nil && err != nil && c.Call.res.Val() == nil {
			c.Call.err = err
		}
	}
}

// backoff waits before resend number try+1, as go-redis would (from 8 ms,
// doubling, up to the client's MaxRetryBackoff); false if ctx ended first.
func backoff(ctx context.Context, opt *redis.Options, try int) bool {
	d := min(8*time.Millisecond<<min(try, 8), max(opt.MaxRetryBackoff, time.Millisecond))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// isReply reports whether err is an answer of Redis (the command reached
// it and was refused), not a network or client-side failure.
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// redirected returns the address of a MOVED or ASK answer: the slot is
// served elsewhere, and the command did not run.
func redirected(err error) (string, bool) {
	if !isReply(err) {
		return "", false
	}
	s := err.Error()
	if !strings.HasPrefix(s, "MOVED ") && !strings.HasPrefix(s, "ASK ") {
		return "", false
	}
	f := strings.Fields(s)
	if len(f) < 3 {
		return "", false
	}
	return f[2], true
}

// slotsPatience bounds how long RunCallsDurable waits for the cluster
// client to learn where a slot moved, before it sends the calls anyway.
const slotsPatience = time.Second

// awaitSlots asks cc to read the slots again and waits (within
// slotsPatience and ctx) until it names addr as the master of key's slot.
func awaitSlots(ctx context.Context, cc *redis.ClusterClient, key, addr string) {
	cc.ReloadState(ctx)
	deadline := time.Now().Add(slotsPatience)
	wait := 10 * time.Millisecond
	for time.Now().Before(deadline) {
		if n, err := cc.MasterForKey(ctx, key); err == nil && n.Options().Addr == addr {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		cc.ReloadState(ctx)
		wait = min(2*wait, 100*time.Millisecond)
	}
}
