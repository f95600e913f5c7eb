package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// EnqueueOne adds one auto-keyed task to q with enqueue20.lua: under the
// entry id the caller chose (EntryIDs), or, when the stream is past it,
// under the id XADD gives, with the op marker opID kept opTTLms. done are
// the op ids of earlier calls to q whose replies were read: their markers
// are set to expire after MarkerGrace. It returns the task's entry id; a
// resend of the call returns the first run's.
func EnqueueOne(ctx context.Context, rdb redis.Scripter, q keys.Queue, id, opID string, opTTLms int64, env []byte, done ...string) (string, error) {
	ks := make([]string, 4, 4+len(done))
	ks[0], ks[1], ks[2], ks[3] = q.Stream(), q.Op(opID), q.Task(id), q.Result(id)
	for _, d := range done {
		ks = append(ks, q.Op(d))
	}
	v, err := script.EnqueueOne.Run(ctx, rdb, ks, id, env, opTTLms, MarkerGrace.Milliseconds()).Result()
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok || s == "" {
		return "", fmt.Errorf("enqueue20.lua: unexpected reply %T", v)
	}
	return s, nil
}

// Entry ids a client chooses (EnqueueOne) are ms-seq, strictly increasing
// per client and queue, and never reused: a resend recognises its call by
// an entry or a record under the id, so an id must name one call only.
//
//   - A new millisecond starts seq at a random value in [idGap, idBase).
//     XADD * starts a millisecond at 0 and counts up by one, so its ids stay
//     far below idGap; another client's ids in the same millisecond differ
//     from ours by a random amount of up to 2^40, and an XADD * run after
//     one of them (each one more than the last) would need to be as long as
//     that distance to reach ours.
//   - The next id in the same millisecond adds a random step of at least
//     idGap: an XADD * run after one of our ids (S+1, S+2, …) never reaches
//     our next one, whatever the run's length within a millisecond.
//   - seq stays below idMax (< 10^14), so that Lua's numbers hold it
//     exactly and print it without an exponent (housekeep.lua steps past a
//     last delivered id); a step that would pass it moves to the next
//     millisecond.
//
// The millisecond is the client's measure of Redis' time, raised to the
// highest one seen in a reply of the same queue (its stream is ahead, e.g.
// another producer's clock). A queue whose stream is ahead of the clock by
// more than MaxAhead gets no id: the caller takes the op marker's way.
const (
	idGap  = 1 << 20
	idBase = 1 << 40
	idStep = 1 << 32
	idMax  = 1 << 46
)

// MaxAhead is how far past the client's clock (ms) an id may be set by a
// stream that is ahead of it.
const MaxAhead = 10_000

// EntryIDs makes the entry ids of one client. Safe for concurrent use.
type EntryIDs struct {
	mu sync.Mutex
	q  map[string]*idState
}

type idState struct {
	seen     int64 // the highest ms seen in a reply
	ms, last int64 // the last id given: ms-last
}

// NewEntryIDs returns the ids of a client.
func NewEntryIDs() *EntryIDs {
	return &EntryIDs{q: map[string]*idState{}}
}

// Next returns a new id of queue at nowMs (the client's measure of Redis'
// time), or at the highest ms seen in a reply of that queue when that is
// later, and false when that is more than MaxAhead later.
func (g *EntryIDs) Next(queue string, nowMs int64) (string, bool) {
	g.mu.Lock()
	st := g.q[queue]
	if st == nil {
		st = &idState{}
		g.q[queue] = st
	}
	if st.seen > nowMs+MaxAhead {
		g.mu.Unlock()
		return "", false
	}
	ms := max(nowMs, st.seen, st.ms, 1)
	var seq int64
	if ms == st.ms {
		seq = st.last + idGap + rand.Int64N(idStep)
		if seq >= idMax {
			ms++
		}
	}
	if ms != st.ms {
		seq = idGap + rand.Int64N(idBase-idGap)
	}
	st.ms, st.last = ms, seq
	g.mu.Unlock()
	b := make([]byte, 0, 40)
	b = strconv.AppendInt(b, ms, 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, seq, 10)
	return string(b), true
}

// Saw learns the ms of an entry id of queue from a reply, so that later ids
// of that queue are not behind its stream.
func (g *EntryIDs) Saw(queue, id string) {
	i := strings.IndexByte(id, '-')
	if i <= 0 {
		return
	}
	ms, err := strconv.ParseInt(id[:i], 10, 64)
	if err != nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.q[queue]
	if st == nil {
		st = &idState{}
		g.q[queue] = st
	}
	st.seen = max(st.seen, ms)
}

// KeepsLastID reports whether the server keeps a stream's last id when its
// last entry is deleted, which EnqueueOne's resend safety needs. Redis does
// (since streams came, 5.0; the servers that report a redis_version in INFO
// server follow it); some stand-ins do not (miniredis checks an explicit id
// against the last entry left, and reports no version). It reads, and
// writes nothing.
func KeepsLastID(ctx context.Context, rdb redis.UniversalClient) (bool, error) {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		if strings.Contains(err.Error(), "not supported") {
			return false, nil
		}
		return false, err
	}
	return infoField(info, "redis_version") != "", nil
}

// ProbeKeepsLastID checks what KeepsLastID infers, by trying it on a
// throwaway stream in q's slot (XADD 2-0, XDEL, XADD 1-0, DEL in one MULTI):
// for tests.
func ProbeKeepsLastID(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, probe string) (bool, error) {
	k := q.Op(probe)
	var again *redis.StringCmd
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAdd(ctx, &redis.XAddArgs{Stream: k, ID: "2-0", Values: []string{"m", ""}})
		p.XDel(ctx, k, "2-0")
		again = p.XAdd(ctx, &redis.XAddArgs{Stream: k, ID: "1-0", Values: []string{"m", ""}})
		p.Del(ctx, k)
		return nil
	})
	if again != nil && again.Err() != nil && strings.Contains(again.Err().Error(), "equal or smaller") {
		return true, nil
	}
	if again != nil && again.Err() == nil {
		return false, nil
	}
	return false, err
}
