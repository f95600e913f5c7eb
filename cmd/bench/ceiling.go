package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/maintain"
)

// The ceiling is a Redis-streams queue with no guarantees at all: no
// scripts, no fencing, no op marker, no counters. Whatever the library does
// on top of XADD, XREADGROUP and XACK costs a share of its rate; every
// throughput row is also shown as a fraction of it.
const (
	ceilingPipe     = 1000 // XADDs per pipeline on the enqueue side
	ceilingPipes    = 2    // pipelines in flight on the enqueue side
	ceilingRead     = 512  // XREADGROUP COUNT of the drain side
	ceilingPool     = 100  // goroutines running the no-op per entry
	ceilingInFlight = 4    // read batches in flight (read, run, or being completed)
	ceilingComplete = 2    // goroutines sending the completion pipelines
)

// envelopeSize returns how many bytes the value of a stream entry of the
// bench's no-op task holds (field "m": the msgpack envelope), as Enqueue
// writes it today: it enqueues noop{N: n} into a scratch queue and reads
// the entry back.
func (e *env) envelopeSize(ctx context.Context, n int) (int, error) {
	c, q, done, err := e.session(ctx, "envelope")
	if err != nil {
		return 0, err
	}
	defer done()
	if _, err := c.Enqueue(ctx, noop{N: n}, &client.EnqueueOpts{Queue: q}); err != nil {
		return 0, err
	}
	ents, err := e.admin.XRange(ctx, keys.ForQueue(q).Stream(), "-", "+").Result()
	if err != nil {
		return 0, err
	}
	if len(ents) != 1 {
		return 0, fmt.Errorf("envelope: the stream holds %d entries, want 1", len(ents))
	}
	size := 0
	for f, v := range ents[0].Values {
		s, _ := v.(string)
		size += len(f) + len(s)
	}
	if m, ok := ents[0].Values["m"].(string); ok && len(ents[0].Values) == 1 {
		size = len(m)
	}
	return size, nil
}

// ceilingKeys are the keys of one ceiling run, all in one slot.
type ceilingKeys struct {
	tag string
}

func newCeilingKeys() ceilingKeys {
	return ceilingKeys{tag: "async-bench:ceiling:{c-" + randHex(4) + "}:"}
}

func (k ceilingKeys) stream() string          { return k.tag + "s" }
func (k ceilingKeys) result(id string) string { return k.tag + "r:" + id }
func (ceilingKeys) group() string             { return "g" }
func (k ceilingKeys) pattern() string         { return k.tag + "*" }
func (ceilingKeys) payload(size int) string   { return strings.Repeat("x", size) }
func (ceilingKeys) record(id string) string {
	return "s\n1\n" + strconv.FormatInt(time.Now().UnixMilli(), 10) + "\n" + id + "\n\x80"
}

// retention is the TTL of a result record: the library's default.
func (ceilingKeys) retention() time.Duration { return maintain.DefaultRetention }

// cleanCeiling removes the run's keys: FLUSHALL when allowed, else a SCAN of its
// tag.
func (e *env) cleanCeiling(ctx context.Context, k ceilingKeys) {
	if e.flush {
		_ = e.admin.FlushAll(ctx).Err()
		return
	}
	iter := e.admin.Scan(ctx, 0, k.pattern(), 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			_ = e.admin.Unlink(ctx, batch...).Err()
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		_ = e.admin.Unlink(ctx, batch...).Err()
	}
}

// ceilingAdd XADDs n entries of one field "m" of size bytes to the stream,
// in pipelines of ceilingPipe, ceilingPipes at once.
func ceilingAdd(ctx context.Context, rdb *redis.Client, k ceilingKeys, n, size int) error {
	payload := k.payload(size)
	var next atomic.Int64
	var wg sync.WaitGroup
	var first atomic.Value
	for w := 0; w < ceilingPipes; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				end := int(next.Add(ceilingPipe))
				start := end - ceilingPipe
				if start >= n {
					return
				}
				end = min(end, n)
				pipe := rdb.Pipeline()
				for i := start; i < end; i++ {
					pipe.XAdd(ctx, &redis.XAddArgs{Stream: k.stream(), ID: "*", Values: []string{"m", payload}})
				}
				if _, err := pipe.Exec(ctx); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return err
	}
	return nil
}

// ceilingEnqueue measures the enqueue side: n pipelined XADDs.
func (e *env) ceilingEnqueue(ctx context.Context, n, size int) (*result, error) {
	k := newCeilingKeys()
	defer e.cleanCeiling(ctx, k)
	rdb := redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 8})
	defer rdb.Close()
	if err := ceilingAdd(ctx, rdb, k, 2000, size); err != nil { // warm the pool
		return nil, err
	}
	r, err := e.measure(ctx, "Ceiling enqueue", n, "", func() (own, error) {
		return nil, ceilingAdd(ctx, rdb, k, n, size)
	})
	if err != nil {
		return nil, err
	}
	if got, err := e.admin.XLen(ctx, k.stream()).Result(); err != nil || got != int64(n+2000) {
		return nil, fmt.Errorf("ceiling enqueue: stream holds %d entries, want %d (%v)", got, n+2000, err)
	}
	r.Settings = fmt.Sprintf("XADD of one %d-byte field, pipelines of %d, %d in flight", size, ceilingPipe, ceilingPipes)
	return r, nil
}

// ceilingDrain measures the drain side: n entries XADDed beforehand, then
// read by one consumer with XREADGROUP COUNT ceilingRead; each entry runs a
// no-op on a pool of ceilingPool goroutines; when a read's entries have all
// run, one pipeline sets a result record per entry (SET … PX, the default
// retention) and XACKs them all. It ends when every entry is acked.
func (e *env) ceilingDrain(ctx context.Context, n, size int) (*result, error) {
	k := newCeilingKeys()
	defer e.cleanCeiling(ctx, k)
	rdb := redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 16})
	defer rdb.Close()
	if err := rdb.XGroupCreateMkStream(ctx, k.stream(), k.group(), "0").Err(); err != nil {
		return nil, err
	}
	if err := ceilingAdd(ctx, rdb, k, n, size); err != nil {
		return nil, err
	}
	if err := rdb.Ping(ctx).Err(); err != nil { // a connection is open
		return nil, err
	}
	type batch struct {
		ids  []string
		left atomic.Int64
	}
	retention := k.retention()
	r, err := e.measure(ctx, "Ceiling drain", n, "", func() (own, error) {
		dctx, cancel := context.WithCancel(ctx)
		defer cancel()
		jobs := make(chan *batch, ceilingRead*ceilingInFlight)
		ready := make(chan *batch, ceilingInFlight)
		slots := make(chan struct{}, ceilingInFlight)
		var acked atomic.Int64
		finished := make(chan struct{})
		errc := make(chan error, 1)
		fail := func(err error) {
			select {
			case errc <- err:
			default:
			}
			cancel()
		}
		var wg sync.WaitGroup
		for i := 0; i < ceilingPool; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for b := range jobs {
					// the no-op handler
					if b.left.Add(-1) == 0 {
						ready <- b
					}
				}
			}()
		}
		for i := 0; i < ceilingComplete; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					var b *batch
					select {
					case b = <-ready:
					case <-dctx.Done():
						return
					}
					pipe := rdb.Pipeline()
					for _, id := range b.ids {
						pipe.Set(dctx, k.result(id), k.record(id), retention)
					}
					pipe.XAck(dctx, k.stream(), k.group(), b.ids...)
					if _, err := pipe.Exec(dctx); err != nil {
						fail(err)
						return
					}
					<-slots
					if acked.Add(int64(len(b.ids))) == int64(n) {
						close(finished)
					}
				}
			}()
		}
		// The reader.
		go func() {
			defer close(jobs)
			read := 0
			for read < n {
				select {
				case slots <- struct{}{}:
				case <-dctx.Done():
					return
				}
				ss, err := rdb.XReadGroup(dctx, &redis.XReadGroupArgs{
					Group: k.group(), Consumer: "c", Streams: []string{k.stream(), ">"},
					Count: ceilingRead, Block: blockTimeout,
				}).Result()
				if err == redis.Nil {
					<-slots
					continue
				}
				if err != nil {
					fail(err)
					return
				}
				b := &batch{}
				for _, s := range ss {
					for _, m := range s.Messages {
						b.ids = append(b.ids, m.ID)
					}
				}
				if len(b.ids) == 0 {
					<-slots
					continue
				}
				read += len(b.ids)
				b.left.Store(int64(len(b.ids)))
				for range b.ids {
					jobs <- b
				}
			}
		}()
		var err error
		select {
		case <-finished:
		case err = <-errc:
		case <-time.After(2 * time.Minute):
			err = fmt.Errorf("acked %d of %d entries in 2 minutes", acked.Load(), n)
		}
		cancel()
		wg.Wait()
		return nil, err
	})
	if err != nil {
		return nil, err
	}
	gs, err := e.admin.XInfoGroups(ctx, k.stream()).Result()
	if err != nil {
		return nil, err
	}
	if len(gs) != 1 || gs[0].Pending != 0 || gs[0].EntriesRead != int64(n) {
		return nil, fmt.Errorf("ceiling drain end state: %+v, want %d entries read, none pending", gs, n)
	}
	r.Settings = fmt.Sprintf("XREADGROUP COUNT %d, a no-op per entry on %d goroutines, then per read one pipeline of SET … PX %v per entry + one XACK (%d reads in flight); entries of one %d-byte field",
		ceilingRead, ceilingPool, retention, ceilingInFlight, size)
	return r, nil
}
