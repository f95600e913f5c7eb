package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// EnqueueOne adds one auto-keyed task to q with enqueue20.lua: under the
// entry id the caller chose (EntryID), or, when the stream is past it,
// under the id XADD gives, with the op marker opID kept opTTLms. It returns
// the task's entry id; a resend of the call returns the first run's.
func EnqueueOne(ctx context.Context, rdb redis.Scripter, q keys.Queue, id, opID string, opTTLms int64, env []byte) (string, error) {
	ks := []string{q.Stream(), q.Op(opID), q.Task(id), q.Result(id)}
	v, err := script.EnqueueOne.Run(ctx, rdb, ks, id, env, opTTLms).Result()
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok || s == "" {
		return "", fmt.Errorf("enqueue20.lua: unexpected reply %T", v)
	}
	return s, nil
}

// Entry ids a client chooses (EnqueueOne): ms-seq, where seq is a random
// prefix of the client, a counter, and idStride zero bits. The stride leaves
// room for the ids XADD * gives after one of ours in the same millisecond
// (each one more than the last), which no Redis reaches within a
// millisecond, so that those never take the id of a later call of ours. seq
// stays below 10^14, so that Lua's numbers hold it exactly and print it
// without an exponent (housekeep.lua steps past a last delivered id).
const (
	idPrefixBits  = 18
	idCounterBits = 16
	idStrideBits  = 12
)

// IDPrefixLimit is the bound of the random prefix NewEntryIDs takes.
const IDPrefixLimit = 1 << idPrefixBits

// EntryIDs makes the entry ids of one client. Safe for concurrent use.
type EntryIDs struct {
	prefix uint64
	ctr    atomic.Uint64
	seen   atomic.Int64 // the highest ms of an id seen in a reply
}

// NewEntryIDs returns the ids of a client whose random prefix is below
// IDPrefixLimit.
func NewEntryIDs(prefix uint64) *EntryIDs {
	return &EntryIDs{prefix: prefix % IDPrefixLimit}
}

// Next returns a new id at nowMs (the client's measure of Redis' time), or
// at the highest ms seen in a reply when that is later.
func (g *EntryIDs) Next(nowMs int64) string {
	ms := max(nowMs, g.seen.Load(), 1)
	c := g.ctr.Add(1) % (1 << idCounterBits)
	seq := (g.prefix<<idCounterBits | c) << idStrideBits
	b := make([]byte, 0, 40)
	b = strconv.AppendInt(b, ms, 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, seq, 10)
	return string(b)
}

// Saw learns the ms of an entry id from a reply, so that later ids are not
// behind the stream.
func (g *EntryIDs) Saw(id string) {
	i := strings.IndexByte(id, '-')
	if i <= 0 {
		return
	}
	ms, err := strconv.ParseInt(id[:i], 10, 64)
	if err != nil {
		return
	}
	for {
		old := g.seen.Load()
		if ms <= old || g.seen.CompareAndSwap(old, ms) {
			return
		}
	}
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
