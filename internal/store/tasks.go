package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
)

// Reads of a queue's tasks by where they are, for the inspector's lists.
// Every function here only reads.

// StreamTask is one entry of a queue's stream.
type StreamTask struct {
	EntryID  string
	Envelope []byte // field m; nil when the entry has none
	Group    string // field g
	Part     string // field pk: the partition of a task a step started
	Next     string // field nx: the task behind it in its partition then
}

// LastDelivered returns the id of the last entry the workers' group read
// from q's stream ("0-0" when none, or when the stream or group does not
// exist yet).
func LastDelivered(ctx context.Context, rdb redis.Cmdable, q keys.Queue) (string, error) {
	gs, err := rdb.XInfoGroups(ctx, q.Stream()).Result()
	if err != nil {
		if noSuchKey(err) {
			return "0-0", nil
		}
		return "", fmt.Errorf("read the group of queue %q: %w", q.Name, err)
	}
	for _, g := range gs {
		if g.Name == keys.Group {
			return g.LastDeliveredID, nil
		}
	}
	return "0-0", nil
}

// StreamAfter reads up to count entries of q's stream after the id after
// (exclusive), oldest first.
func StreamAfter(ctx context.Context, rdb redis.Cmdable, q keys.Queue, after string, count int) ([]StreamTask, error) {
	ms, err := rdb.XRangeN(ctx, q.Stream(), "("+after, "+", int64(count)).Result()
	if err != nil {
		return nil, fmt.Errorf("read the stream of queue %q: %w", q.Name, err)
	}
	out := make([]StreamTask, len(ms))
	for i, m := range ms {
		out[i] = streamTask(m)
	}
	return out, nil
}

func streamTask(m redis.XMessage) StreamTask {
	t := StreamTask{EntryID: m.ID}
	if s, ok := m.Values["m"].(string); ok {
		t.Envelope = []byte(s)
	}
	t.Group, _ = m.Values["g"].(string)
	t.Part, _ = m.Values["pk"].(string)
	t.Next, _ = m.Values["nx"].(string)
	return t
}

// PendingTask is an entry a worker holds (running), with its entry.
type PendingTask struct {
	StreamTask
	Consumer   string
	IdleMs     int64 // since its delivery or last heartbeat
	Deliveries int64
	Found      bool // the entry is still in the stream
}

// PendingAfter reads up to count of q's pending entries after the id after
// (exclusive; "" from the start), oldest first, with their entries: the
// extended XPENDING, then one XRANGE per entry in one pipeline.
func PendingAfter(ctx context.Context, rdb redis.Cmdable, q keys.Queue, after string, count int) ([]PendingTask, error) {
	start := "-"
	if after != "" {
		start = "(" + after
	}
	ps, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: q.Stream(), Group: keys.Group, Start: start, End: "+", Count: int64(count)}).Result()
	if err != nil {
		if strings.Contains(err.Error(), "NOGROUP") || noSuchKey(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read the running tasks of queue %q: %w", q.Name, err)
	}
	cmds := make([]*redis.XMessageSliceCmd, len(ps))
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, x := range ps {
			cmds[i] = p.XRange(ctx, q.Stream(), x.ID, x.ID)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the running tasks of queue %q: %w", q.Name, err)
	}
	out := make([]PendingTask, len(ps))
	for i, x := range ps {
		out[i] = PendingTask{StreamTask: StreamTask{EntryID: x.ID}, Consumer: x.Consumer, IdleMs: x.Idle.Milliseconds(), Deliveries: x.RetryCount}
		if ms := cmds[i].Val(); len(ms) == 1 {
			out[i].StreamTask = streamTask(ms[0])
			out[i].Found = true
		}
	}
	return out, nil
}

// Scored is a member of a sorted set and its score.
type Scored struct {
	Member string
	Score  int64
}

// ZPage reads up to count members of the sorted set key from rank offset,
// lowest score first (rev: highest first).
func ZPage(ctx context.Context, rdb redis.Cmdable, key string, offset, count int, rev bool) ([]Scored, error) {
	var zs []redis.Z
	var err error
	if rev {
		zs, err = rdb.ZRevRangeWithScores(ctx, key, int64(offset), int64(offset+count-1)).Result()
	} else {
		zs, err = rdb.ZRangeWithScores(ctx, key, int64(offset), int64(offset+count-1)).Result()
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	out := make([]Scored, len(zs))
	for i, z := range zs {
		out[i] = Scored{Member: fmt.Sprint(z.Member), Score: int64(z.Score)}
	}
	return out, nil
}

// TaskRecord is the record (hash t:<key>) of one task, as read.
type TaskRecord struct {
	Key      string
	Found    bool
	State    string // st
	Entry    string // e
	Envelope []byte // m
	Error    string // err
	Attempt  int    // a
	FinMs    int64  // fin
	Parked   bool   // x is set and st is scheduled: a worker put it back
	Part     string // pk
	Group    string // g
}

// TaskRecords reads the records of q's tasks ks in one pipeline.
func TaskRecords(ctx context.Context, rdb redis.Cmdable, q keys.Queue, ks []string) ([]TaskRecord, error) {
	cmds := make([]*redis.SliceCmd, len(ks))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range ks {
			cmds[i] = p.HMGet(ctx, q.Task(k), "st", "e", "m", "err", "a", "fin", "x", "pk", "g")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read tasks of queue %q: %w", q.Name, err)
	}
	out := make([]TaskRecord, len(ks))
	for i, c := range cmds {
		v := c.Val()
		str := func(j int) string {
			if j >= len(v) {
				return ""
			}
			s, _ := v[j].(string)
			return s
		}
		r := TaskRecord{Key: ks[i], State: str(0), Entry: str(1), Error: str(3), Part: str(7), Group: str(8)}
		r.Found = r.State != ""
		if m := str(2); m != "" {
			r.Envelope = []byte(m)
		}
		r.Attempt, _ = strconv.Atoi(str(4))
		r.FinMs, _ = strconv.ParseInt(str(5), 10, 64)
		r.Parked = r.State == "scheduled" && str(6) != ""
		out[i] = r
	}
	return out, nil
}

// LimitWaiting reports, in one pipeline, which of the limits scopes (keys
// "kind:<kind>", "queue:<queue>") list the task id among their waiters.
func LimitWaiting(ctx context.Context, rdb redis.Cmdable, scopes []string, id string) ([]bool, error) {
	cmds := make([]*redis.FloatCmd, len(scopes))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range scopes {
			cmds[i] = p.ZScore(ctx, keys.ForLimit(s).Waiters(), id)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read the waiters of limits: %w", err)
	}
	out := make([]bool, len(scopes))
	for i, c := range cmds {
		out[i] = c.Err() == nil
	}
	return out, nil
}

// ScheduledAt returns the score (due ms) of q's task key in the scheduled
// set, and whether it is there.
func ScheduledAt(ctx context.Context, rdb redis.Cmdable, q keys.Queue, key string) (int64, bool, error) {
	s, err := rdb.ZScore(ctx, q.Scheduled(), key).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return int64(s), true, nil
}

// PendingEntry reads the pending entry id of q (XPENDING for that id); ok
// is false when no worker holds it.
func PendingEntry(ctx context.Context, rdb redis.Cmdable, q keys.Queue, id string) (p PendingTask, ok bool, err error) {
	ps, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: q.Stream(), Group: keys.Group, Start: id, End: id, Count: 1}).Result()
	if err != nil {
		if strings.Contains(err.Error(), "NOGROUP") || noSuchKey(err) {
			return PendingTask{}, false, nil
		}
		return PendingTask{}, false, fmt.Errorf("read the lease of %s: %w", keys.TaskID(q.Name, id), err)
	}
	if len(ps) != 1 {
		return PendingTask{}, false, nil
	}
	x := ps[0]
	return PendingTask{StreamTask: StreamTask{EntryID: x.ID}, Consumer: x.Consumer, IdleMs: x.Idle.Milliseconds(), Deliveries: x.RetryCount}, true, nil
}

// ZMembers reads every member of the sorted set key, lowest score first.
func ZMembers(ctx context.Context, rdb redis.Cmdable, key string) ([]string, error) {
	ms, err := rdb.ZRange(ctx, key, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return ms, nil
}

// noSuchKey reports Redis' answer to a stream command on a key that does
// not exist.
func noSuchKey(err error) bool { return err != nil && strings.Contains(err.Error(), "no such key") }

// InSets reports, in one pipeline, which of members are in each of the
// sorted sets sets (out[i][j]: member j in set i).
func InSets(ctx context.Context, rdb redis.Cmdable, sets []string, members []string) ([][]bool, error) {
	cmds := make([][]*redis.FloatCmd, len(sets))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range sets {
			cmds[i] = make([]*redis.FloatCmd, len(members))
			for j, m := range members {
				cmds[i][j] = p.ZScore(ctx, s, m)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read sorted sets: %w", err)
	}
	out := make([][]bool, len(sets))
	for i := range sets {
		out[i] = make([]bool, len(members))
		for j, c := range cmds[i] {
			out[i][j] = c.Err() == nil
		}
	}
	return out, nil
}
