package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
)

// ReadEntry is a stream entry read for a consumer (see ReadNew).
type ReadEntry struct {
	Queue    int    // index in the queues given to ReadNew
	ID       string // entry id
	Envelope string // field m, the encoded envelope
	HasM     bool   // the entry has field m (an entry without it was not written by this library)
	Group    string // field g: the public id of the group it is a member of, or ''
	Fields   string // every field, as text, when it has no field m
	// Part and Next are fields pk and nx: the partition key of a
	// partitioned task started by a step or at its enqueue, and the task
	// then behind it ('' for none, and for an entry that names no partition).
	Part, Next string
}

// ErrCrossSlot is returned by ReadNew when the queues' streams live in
// different Redis Cluster slots: one read cannot span them.
var ErrCrossSlot = errors.New("the queues' streams are in different cluster slots")

// ErrNoGroup is returned by ReadNew when a queue's consumer group (or its
// stream) is gone: EnsureGroup creates it again.
var ErrNoGroup = errors.New("no consumer group")

// ReadNew reads up to count new entries of each of queues qs for consumer,
// waiting up to block for one to come (a negative block does not wait). It
// returns no entries, and no error, when none came.
func ReadNew(ctx context.Context, rdb redis.Cmdable, qs []keys.Queue, consumer string, count int, block time.Duration) ([]ReadEntry, error) {
	streams := make([]string, 0, 2*len(qs))
	for _, q := range qs {
		streams = append(streams, q.Stream())
	}
	for range qs {
		streams = append(streams, ">")
	}
	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group:    keys.Group,
		Consumer: consumer,
		Streams:  streams,
		Count:    int64(count),
		Block:    block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		if len(qs) > 1 && strings.Contains(err.Error(), "CROSSSLOT") {
			return nil, fmt.Errorf("%w: %w", ErrCrossSlot, err)
		}
		if strings.Contains(err.Error(), "NOGROUP") {
			return nil, fmt.Errorf("%w: %w", ErrNoGroup, err)
		}
		return nil, err
	}
	var out []ReadEntry
	for _, s := range res {
		qi := -1
		for i, q := range qs {
			if q.Stream() == s.Stream {
				qi = i
				break
			}
		}
		if qi < 0 {
			return nil, fmt.Errorf("read from unknown stream %q", s.Stream)
		}
		for _, m := range s.Messages {
			e := ReadEntry{Queue: qi, ID: m.ID}
			e.Envelope, e.HasM = m.Values["m"].(string)
			e.Group, _ = m.Values["g"].(string)
			e.Part, _ = m.Values["pk"].(string)
			if e.Part != "" {
				e.Next, _ = m.Values["nx"].(string)
			}
			if !e.HasM {
				e.Fields = fmt.Sprint(m.Values)
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// CancelRequested reports, in one round trip, which of the tasks of q with
// keys taskKeys have a cancel request.
func CancelRequested(ctx context.Context, rdb redis.Cmdable, q keys.Queue, taskKeys []string) ([]bool, error) {
	cmds := make([]*redis.BoolCmd, len(taskKeys))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range taskKeys {
			cmds[i] = p.HExists(ctx, q.Task(k), "cx")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look up cancel requests in queue %q: %w", q.Name, err)
	}
	out := make([]bool, len(cmds))
	for i, c := range cmds {
		out[i] = c.Val()
	}
	return out, nil
}

// SubscribeControl subscribes to the control channels of queues qs (cancel
// requests for running tasks) and waits for every confirmation, each for
// at most wait: a request sent once it returned reaches the subscriber. The
// caller closes the subscription.
func SubscribeControl(ctx context.Context, rdb redis.UniversalClient, qs []keys.Queue, wait time.Duration) (*redis.PubSub, error) {
	chans := make([]string, len(qs))
	for i, q := range qs {
		chans[i] = q.Ctl()
	}
	ps := rdb.Subscribe(ctx, chans...)
	for range chans {
		if _, err := ps.ReceiveTimeout(ctx, wait); err != nil {
			_ = ps.Close()
			return nil, fmt.Errorf("subscribe to control channels: %w", err)
		}
	}
	return ps, nil
}
