package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// Call is one script call that RunCalls sends, pipelined with others: an
// enqueue of up to a chunk of tasks to one queue (EnqueueCall), or of a
// chunk of a group's members (MembersCall). Its reply is read with the
// method of its kind once RunCalls returned.
type Call struct {
	s    *redis.Script
	keys []string
	args []any
	res  *redis.Cmd
	err  error
}

// EnqueueCall is one enqueue.lua call: tasks into q under op marker opID
// (kept opTTLms), shortening the markers of the earlier calls done.
func EnqueueCall(q keys.Queue, opID string, opTTLms int64, tasks []NewTask, done ...string) *Call {
	ks, args := EnqueueArgs(q, opID, opTTLms, tasks, done...)
	return &Call{s: script.Enqueue, keys: ks, args: args}
}

// MembersCall is one groupenq.lua call: chunk number n of the members of
// group g, whose home queue they go to; indices are their submission
// indices, envs their envelopes.
func MembersCall(g GroupRef, n int, indices []int, envs [][]byte) *Call {
	q := g.Home
	args := make([]any, 0, 3+2*len(envs))
	args = append(args, n, g.String(), q.Name)
	for i, env := range envs {
		args = append(args, indices[i], env)
	}
	return &Call{s: script.GroupEnq, keys: []string{q.Stream(), q.Group(g.ID), q.GroupOpen(g.ID)}, args: args}
}

// Err is the call's own error, once sent.
func (c *Call) Err() error { return c.err }

// Enqueued parses the reply of an EnqueueCall of n tasks.
func (c *Call) Enqueued(n int) ([]Enqueued, error) {
	if c.err != nil {
		return nil, c.err
	}
	return ParseEnqueued(c.res.Val(), n)
}

// Members parses the reply of a MembersCall: the keys of the members
// added, nothing when an earlier call added them (ChunkRecord says where),
// or the group's end state when it ended meanwhile (ended is then set).
func (c *Call) Members() (added []string, ended string, err error) {
	if c.err != nil {
		return nil, "", c.err
	}
	ids, err := c.res.StringSlice()
	if err != nil {
		return nil, "", err
	}
	if len(ids) == 1 && strings.HasPrefix(ids[0], "!") {
		return nil, ids[0][1:], nil
	}
	return ids, "", nil
}

// ChunkRecord reads the record of chunk n of group g's members, which an
// earlier MembersCall wrote (ParseChunk reads it).
func ChunkRecord(ctx context.Context, rdb redis.Cmdable, g GroupRef, n int) (string, error) {
	return rdb.HGet(ctx, g.Home.Group(g.ID), fmt.Sprintf("e:%d", n)).Result()
}

// RunCalls sends calls in one round trip (a pipeline of EVALSHA, or one
// EVALSHA falling back to EVAL) and sets each call's reply and error; it
// returns the first error. If Redis lost the scripts (a restart), they are
// loaded again and the pipeline sent again, once.
func RunCalls(ctx context.Context, rdb redis.UniversalClient, calls []*Call) error {
	if len(calls) == 1 {
		c := calls[0]
		c.res = c.s.Run(ctx, rdb, c.keys, c.args...)
		c.err = c.res.Err()
		return c.err
	}
	for try := 0; ; try++ {
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, c := range calls {
				c.res = c.s.EvalSha(ctx, p, c.keys, c.args...)
			}
			return nil
		})
		if err != nil && try == 0 && strings.Contains(err.Error(), "NOSCRIPT") {
			if lerr := script.Load(ctx, rdb); lerr != nil {
				for _, c := range calls {
					c.err = lerr
				}
				return lerr
			}
			continue
		}
		for _, c := range calls {
			c.err = c.res.Err()
			if c.err == nil && err != nil && c.res.Val() == nil {
				c.err = err // not sent at all
			}
		}
		return err
	}
}

// IsLoading reports whether err is Redis' LOADING answer (it is reading its
// data back after a restart).
func IsLoading(err error) bool { return redis.IsLoadingError(err) }

// IsOOM reports whether err is Redis' OOM answer (used memory is over
// maxmemory, writes are refused).
func IsOOM(err error) bool { return redis.IsOOMError(err) }
