package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// Cancel cancels the task with key key (see cancel.lua); it returns the state
// the script reports: a final state, "cancelling", or "" for an unknown task.
func Cancel(ctx context.Context, rdb redis.Scripter, q keys.Queue, key string, retainMs int64, reason string) (string, error) {
	ks := []string{q.Task(key), q.Result(key), q.Stream(), q.Scheduled(), q.Conts(key), q.Outbox(), q.Hooks()}
	v, err := script.Cancel.Run(ctx, rdb, ks, keys.Group, key, q.Done(), q.Ctl(), retainMs, reason, keys.TaskID(q.Name, key)).StringSlice()
	if err != nil {
		if strings.Contains(err.Error(), "NOGROUP") {
			return "", nil
		}
		return "", fmt.Errorf("cancel task %s: %w", keys.TaskID(q.Name, key), err)
	}
	return v[0], nil
}

// ContSpec names a continuation in an outbox or continuation list.
func ContSpec(queue, key string, onlyOnSuccess bool) string {
	flag := "0"
	if onlyOnSuccess {
		flag = "1"
	}
	return queue + "/" + key + "|" + flag
}

func parseSpec(s string) (queue, key string, onlyOnSuccess bool, err error) {
	bar := strings.LastIndexByte(s, '|')
	if bar < 0 {
		return "", "", false, fmt.Errorf("continuation spec %q has no flag", s)
	}
	queue, key, err = keys.SplitTaskID(s[:bar])
	return queue, key, s[bar+1:] == "1", err
}

// CreateWaiting creates a continuation waiting in its own queue; false if a
// task with that key exists already.
func CreateWaiting(ctx context.Context, rdb redis.Scripter, q keys.Queue, key string, env []byte) (bool, error) {
	n, err := script.Waiting.Run(ctx, rdb, []string{q.Task(key), q.Result(key)}, env).Int64()
	if err != nil {
		return false, fmt.Errorf("create continuation %s: %w", keys.TaskID(q.Name, key), err)
	}
	return n == 1, nil
}

// ErrUnknownTask is returned by AddContinuation when no task has the key.
var ErrUnknownTask = errors.New("no such task")

// AddContinuation registers spec on the task with key key of queue q. fired
// reports that the task had ended: the spec went to q's outbox.
func AddContinuation(ctx context.Context, rdb redis.Scripter, q keys.Queue, key, spec string) (fired bool, err error) {
	ks := []string{q.Task(key), q.Result(key), q.Conts(key), q.Outbox(), q.Hooks(), q.Stream()}
	v, err := script.ContAdd.Run(ctx, rdb, ks, spec, keys.TaskID(q.Name, key)).Text()
	if err != nil {
		return false, fmt.Errorf("register continuation on %s: %w", keys.TaskID(q.Name, key), err)
	}
	if v == "unknown" {
		return false, fmt.Errorf("register continuation on %s: %w", keys.TaskID(q.Name, key), ErrUnknownTask)
	}
	return v == "fired", nil
}

// DrainOutbox activates the continuations in q's outbox, and in the outboxes
// their cancellations fill in turn, until all are empty. Each is activated
// once however many processes drain at the same time. retainMs is how long a
// continuation cancelled here (its parent did not succeed) is kept.
func DrainOutbox(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, retainMs int64) error {
	todo := []keys.Queue{q}
	for len(todo) > 0 {
		cur := todo[0]
		todo = todo[1:]
		for {
			entries, err := rdb.XRangeN(ctx, cur.Outbox(), "-", "+", 100).Result()
			if err != nil {
				return fmt.Errorf("read outbox of queue %q: %w", cur.Name, err)
			}
			if len(entries) == 0 {
				break
			}
			ids := make([]string, 0, len(entries))
			for _, e := range entries {
				ids = append(ids, e.ID)
				spec, _ := e.Values["s"].(string)
				parent, _ := e.Values["p"].(string)
				state, _ := e.Values["st"].(string)
				tq, tkey, only, err := parseSpec(spec)
				if err != nil {
					// Written by nothing of ours: drop it rather than block the outbox.
					continue
				}
				t := keys.ForQueue(tq)
				ks := []string{t.Task(tkey), t.Stream(), t.Conts(tkey), t.Outbox(), t.Hooks()}
				flag := "0"
				if only {
					flag = "1"
				}
				r, err := script.Activate.Run(ctx, rdb, ks, tkey, flag, parent, state, t.Done(), retainMs, keys.TaskID(tq, tkey)).Int64()
				if err != nil && !errors.Is(err, redis.Nil) {
					return fmt.Errorf("activate continuation %s: %w", keys.TaskID(tq, tkey), err)
				}
				if r == 2 {
					todo = append(todo, t)
				}
			}
			if err := rdb.XDel(ctx, cur.Outbox(), ids...).Err(); err != nil {
				return fmt.Errorf("trim outbox of queue %q: %w", cur.Name, err)
			}
		}
	}
	return nil
}

// AddKids records child task ids under their parent's kids set, kept 7 days
// after the last addition.
func AddKids(ctx context.Context, rdb redis.Cmdable, q keys.Queue, parentKey string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	ms := make([]any, len(ids))
	for i, id := range ids {
		ms[i] = id
	}
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, q.Kids(parentKey), ms...)
		p.PExpire(ctx, q.Kids(parentKey), kidsTTL)
		return nil
	})
	if err != nil {
		return fmt.Errorf("record children of %s: %w", keys.TaskID(q.Name, parentKey), err)
	}
	return nil
}

// Kids returns the ids of the children of a task.
func Kids(ctx context.Context, rdb redis.Cmdable, q keys.Queue, key string) ([]string, error) {
	return rdb.SMembers(ctx, q.Kids(key)).Result()
}

const kidsTTL = 7 * 24 * time.Hour
