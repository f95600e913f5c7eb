package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// BatchItem is one item to append: its task key and envelope.
type BatchItem struct {
	Key string
	Env []byte
}

// AppendBatch appends items (at most maxSize) to the open batch of kind in
// q, opening a new one (key newKey, envelope newEnv, due maxWaitMs after
// now) when none is open. It returns each item's batch key and, when it
// opened a batch, that batch's due time (Unix ms, Redis time), else 0.
func AppendBatch(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, kind, newKey string, newEnv []byte, maxSize int, maxWaitMs int64, items []BatchItem) ([]string, int64, error) {
	if len(items) > maxSize {
		return nil, 0, fmt.Errorf("append to batch: %d items in one call, at most %d", len(items), maxSize)
	}
	ptrKey := q.BatchOpen(kind)
	for try := 0; try < 50; try++ {
		ptr, err := rdb.Get(ctx, ptrKey).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, 0, fmt.Errorf("read open batch of %s in queue %q: %w", kind, q.Name, err)
		}
		cur := ptr
		if cur == "" {
			cur = "-" // names keys the script does not touch
		}
		ks := make([]string, 0, 7+len(items))
		ks = append(ks, ptrKey, q.Stream(), q.Scheduled(), q.Task(cur), q.BatchItems(cur), q.Task(newKey), q.BatchItems(newKey))
		args := make([]any, 0, 6+2*len(items))
		args = append(args, ptr, newKey, newEnv, maxSize, maxWaitMs, len(items))
		for _, it := range items {
			ks = append(ks, q.Task(it.Key))
			args = append(args, it.Key, it.Env)
		}
		res, err := script.BatchAdd.Run(ctx, rdb, ks, args...).Slice()
		if err != nil {
			return nil, 0, fmt.Errorf("append to batch of %s in queue %q: %w", kind, q.Name, err)
		}
		if s, _ := res[0].(string); s == "again" {
			continue
		}
		opened, _ := res[1].(int64)
		out := make([]string, len(items))
		for i := range out {
			out[i], _ = res[2+i].(string)
		}
		return out, opened, nil
	}
	return nil, 0, fmt.Errorf("append to batch of %s in queue %q: the open batch kept changing; try again", kind, q.Name)
}

// FlushBatch closes the open batch of kind in q now; false when none was
// open.
func FlushBatch(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, kind string) (bool, error) {
	ptrKey := q.BatchOpen(kind)
	for try := 0; try < 50; try++ {
		ptr, err := rdb.Get(ctx, ptrKey).Result()
		if errors.Is(err, redis.Nil) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read open batch of %s in queue %q: %w", kind, q.Name, err)
		}
		r, err := script.BatchFlush.Run(ctx, rdb, []string{ptrKey, q.Stream(), q.Scheduled(), q.Task(ptr)}, ptr).Text()
		if err != nil {
			return false, fmt.Errorf("flush batch of %s in queue %q: %w", kind, q.Name, err)
		}
		switch r {
		case "flushed":
			return true, nil
		case "none":
			return false, nil
		}
	}
	return false, fmt.Errorf("flush batch of %s in queue %q: the open batch kept changing; try again", kind, q.Name)
}

// BatchRecord is an item of a batch as stored.
type BatchRecord struct {
	Key   string
	Env   []byte
	State string // "waiting" while the item has not ended
}

// BatchItemsOf reads the items of batch bkey in q, in append order.
func BatchItemsOf(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, bkey string) ([]BatchRecord, error) {
	ks, err := rdb.LRange(ctx, q.BatchItems(bkey), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("read batch %s: %w", keys.TaskID(q.Name, bkey), err)
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ks))
	for i, k := range ks {
		cmds[i] = pipe.HMGet(ctx, q.Task(k), "st", "m")
	}
	if len(ks) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("read items of batch %s: %w", keys.TaskID(q.Name, bkey), err)
		}
	}
	out := make([]BatchRecord, len(ks))
	for i, k := range ks {
		v := cmds[i].Val()
		st, _ := v[0].(string)
		env, _ := v[1].(string)
		out[i] = BatchRecord{Key: k, Env: []byte(env), State: st}
	}
	return out, nil
}

// BatchOutcome is how one item of a batch ended.
type BatchOutcome struct {
	Key      string
	OK       bool   // succeeded with Data as its result; else dead with Data as its error
	Data     []byte // result or error text
	RetainMs int64
}

// EndBatch records the outcomes of a batch's items and acknowledges the
// batch, fenced by its attempt's token (see batchend.lua). It returns 0 when
// the lease was lost (nothing written), 1 recorded, 2 recorded and the
// outbox written.
func EndBatch(ctx context.Context, rdb redis.Scripter, q keys.Queue, consumer, entryID string, deliveries int64, bkey string, attempt int, outs []BatchOutcome) (int, error) {
	ks := make([]string, 0, 6+3*len(outs))
	ks = append(ks, q.Stream(), q.Dead(), q.Outbox(), q.Hooks(), q.Task(bkey), q.BatchItems(bkey))
	args := make([]any, 0, 8+4*len(outs))
	args = append(args, keys.Group, consumer, entryID, deliveries, q.Done(), q.Name, attempt, len(outs))
	for _, o := range outs {
		ks = append(ks, q.Task(o.Key), q.Result(o.Key), q.Conts(o.Key))
		op := "d"
		if o.OK {
			op = "s"
		}
		args = append(args, o.Key, op, o.Data, o.RetainMs)
	}
	n, err := script.BatchEnd.Run(ctx, rdb, ks, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("record batch %s: %w", keys.TaskID(q.Name, bkey), err)
	}
	return n, nil
}
