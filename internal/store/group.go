package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// GroupRef names a group: its home queue, whose slot holds its keys, and
// its own id.
type GroupRef struct {
	Home keys.Queue
	ID   string
}

// ParseGroupRef parses a public group id ("group:<home>/<id>").
func ParseGroupRef(s string) (GroupRef, error) {
	home, id, err := keys.SplitGroupID(s)
	if err != nil {
		return GroupRef{}, err
	}
	return GroupRef{Home: keys.ForQueue(home), ID: id}, nil
}

// String returns the public id.
func (g GroupRef) String() string { return keys.GroupID(g.Home.Name, g.ID) }

// UnsealedTTL is how long a group that was never sealed is kept: its
// creator failed and nobody completed the call (sealing keeps a group until
// it ends).
const UnsealedTTL = 7 * 24 * time.Hour

// OpenMember is the sentinel that keeps a group from ending until sealed.
const OpenMember = "~open"

// GroupSettings are fixed when a group is created.
type GroupSettings struct {
	Members     int
	FailFast    bool
	Limit       int // InvokeAll concurrency; 0 for none
	RetainMs    int64
	Parent      string // public id of the group this one is a member of
	ParentEntry string // this group's member name there
}

// NewGroup creates g (see groupnew.lua) with incarnation nonce; it returns
// "new", "open" (exists, never sealed) or "sealed", and the nonce the group
// was made with. It registers the group's home queue first, so that the
// coordinators sweep its outbox even when no worker serves that queue.
func NewGroup(ctx context.Context, rdb redis.Cmdable, g GroupRef, s GroupSettings, nonce string) (string, string, error) {
	if err := RegisterQueue(ctx, rdb, g.Home.Name); err != nil {
		return "", "", fmt.Errorf("create group %s: %w", g, err)
	}
	ff := "0"
	if s.FailFast {
		ff = "1"
	}
	v, err := script.GroupNew.Run(ctx, rdb, []string{g.Home.Group(g.ID), g.Home.GroupOpen(g.ID), g.Home.Groups()},
		s.Members, ff, s.Limit, s.RetainMs, s.Parent, s.ParentEntry, UnsealedTTL.Milliseconds(), nonce, g.ID, GroupIndexCap).StringSlice()
	if err != nil {
		return "", "", fmt.Errorf("create group %s: %w", g, err)
	}
	if len(v) != 2 {
		return "", "", fmt.Errorf("create group %s: unexpected reply %q", g, v)
	}
	return v[0], v[1], nil
}

// GroupMember is one member to add: a task id or a group id.
type GroupMember struct {
	Index int
	Name  string
	Held  bool
}

// groupAddChunk bounds the members of one groupadd.lua call.
const groupAddChunk = 1000

// AddGroupMembers adds members in pipelined chunks. It returns the group's
// state: "running", or the state it ended in meanwhile (then not every
// chunk may have been added).
func AddGroupMembers(ctx context.Context, rdb redis.UniversalClient, g GroupRef, ms []GroupMember) (string, error) {
	ks := []string{g.Home.Group(g.ID), g.Home.GroupOpen(g.ID), g.Home.GroupOrder(g.ID), g.Home.GroupHeld(g.ID), g.Home.Stats()}
	var cmds []*redis.Cmd
	send := func() error {
		cmds = cmds[:0]
		rest := ms
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for len(rest) > 0 {
				n := min(len(rest), groupAddChunk)
				args := make([]any, 0, 1+3*n)
				args = append(args, UnsealedTTL.Milliseconds())
				for _, m := range rest[:n] {
					held := "0"
					if m.Held {
						held = "1"
					}
					args = append(args, m.Index, m.Name, held)
				}
				cmds = append(cmds, script.GroupAdd.EvalSha(ctx, p, ks, args...))
				rest = rest[n:]
			}
			return nil
		})
		return err
	}
	err := send()
	if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
		// Redis lost its scripts (a restart): load them and send again,
		// which groupadd.lua makes safe.
		if lerr := script.Load(ctx, rdb); lerr != nil {
			return "", lerr
		}
		err = send()
	}
	if err != nil {
		return "", fmt.Errorf("add members to group %s: %w", g, err)
	}
	for _, c := range cmds {
		if st, _ := c.Text(); st != "running" {
			return st, nil
		}
	}
	return "running", nil
}

// MemberEnd is one ended member for EndMembers.
type MemberEnd struct {
	Member string
	State  string
}

// EndMembers counts ended members of g (see groupend.lua). It returns the
// group's state ("" when unknown) and whether g's home outbox was written.
func EndMembers(ctx context.Context, rdb redis.Scripter, g GroupRef, ends []MemberEnd) (string, bool, error) {
	v, err := endMembersCmd(ctx, rdb, g, ends).Slice()
	if err != nil {
		return "", false, fmt.Errorf("count ended members of group %s: %w", g, err)
	}
	st, _ := v[0].(string)
	wrote, _ := v[1].(int64)
	return st, wrote == 1, nil
}

// endMembersCmd runs groupend.lua for ends of g (queues it, on a pipeline).
func endMembersCmd(ctx context.Context, rdb redis.Scripter, g GroupRef, ends []MemberEnd) *redis.Cmd {
	h := g.Home
	ks := []string{h.Group(g.ID), h.GroupOpen(g.ID), h.GroupOrder(g.ID), h.GroupHeld(g.ID), h.GroupConts(g.ID), h.Outbox(), h.Hooks(), h.Stats(),
		h.GroupProgress(g.ID)}
	args := make([]any, 0, 3+2*len(ends))
	args = append(args, h.Done(), g.String(), g.ID)
	for _, e := range ends {
		args = append(args, e.Member, e.State)
	}
	return script.GroupEnd.Run(ctx, rdb, ks, args...)
}

// SealGroup marks g complete: it may end from now on, and InvokeAll's first
// members are released.
func SealGroup(ctx context.Context, rdb redis.Scripter, g GroupRef) (string, bool, error) {
	return EndMembers(ctx, rdb, g, []MemberEnd{{Member: OpenMember, State: "succeeded"}})
}

// AddGroupContinuation registers spec on g, or fires it when g has ended.
func AddGroupContinuation(ctx context.Context, rdb redis.Scripter, g GroupRef, spec string) (fired bool, err error) {
	h := g.Home
	v, err := script.GroupCont.Run(ctx, rdb, []string{h.Group(g.ID), h.GroupConts(g.ID), h.Outbox()}, spec, g.String()).Text()
	if err != nil {
		return false, fmt.Errorf("register continuation on %s: %w", g, err)
	}
	if v == "unknown" {
		return false, fmt.Errorf("register continuation on %s: %w", g, ErrUnknownTask)
	}
	return v == "fired", nil
}

// CancelGroup asks g to end cancelled (see groupcancel.lua); it returns the
// group's state, "" when unknown.
func CancelGroup(ctx context.Context, rdb redis.Scripter, g GroupRef, reason string) (string, error) {
	h := g.Home
	v, err := script.GroupCancel.Run(ctx, rdb, []string{h.Group(g.ID), h.GroupOpen(g.ID), h.Outbox()}, g.String(), reason).Text()
	if err != nil {
		return "", fmt.Errorf("cancel group %s: %w", g, err)
	}
	return v, nil
}

// NestGroup records sub, a nested group whose join is a member of g, so
// that cancelling g reaches it.
func NestGroup(ctx context.Context, rdb redis.Cmdable, g GroupRef, index int, sub GroupRef) error {
	if err := rdb.HSet(ctx, g.Home.Group(g.ID), "nest:"+strconv.Itoa(index), sub.String()).Err(); err != nil {
		return fmt.Errorf("record nested group %s in %s: %w", sub, g, err)
	}
	return nil
}

// SetGroupJoin records the task id of g's join.
func SetGroupJoin(ctx context.Context, rdb redis.Cmdable, g GroupRef, id string) error {
	if err := rdb.HSet(ctx, g.Home.Group(g.ID), "join", id).Err(); err != nil {
		return fmt.Errorf("record the join of %s: %w", g, err)
	}
	return nil
}

// GroupState is a group's counters.
type GroupState struct {
	State     string // running, succeeded, failed, cancelled; "" unknown
	Members   int
	Succeeded int
	Failed    int
	First     string // the first member that did not succeed
	Parent    string
	Limit     int    // InvokeAll's limit, 0 for none
	Cancel    bool   // Cancel was called (the group ends cancelled)
	Join      string // the join's task id, if any
	StartMs   int64
	EndMs     int64
}

// ReadGroup reads g's counters in one HMGET.
func ReadGroup(ctx context.Context, rdb redis.Cmdable, g GroupRef) (GroupState, error) {
	v, err := rdb.HMGet(ctx, g.Home.Group(g.ID), groupFields...).Result()
	if err != nil {
		return GroupState{}, fmt.Errorf("read group %s: %w", g, err)
	}
	return parseGroupState(v), nil
}

// groupFields are the fields of a group's hash that ReadGroup reads.
var groupFields = []string{"st", "n", "ok", "bad", "first", "pg", "at", "fin", "lim", "cx", "join"}

// parseGroupState parses the values of groupFields.
func parseGroupState(v []any) GroupState {
	str := func(i int) string {
		if i >= len(v) {
			return ""
		}
		s, _ := v[i].(string)
		return s
	}
	num := func(i int) int64 { n, _ := strconv.ParseInt(str(i), 10, 64); return n }
	return GroupState{
		State: str(0), Members: int(num(1)), Succeeded: int(num(2)), Failed: int(num(3)),
		First: str(4), Parent: str(5), StartMs: num(6), EndMs: num(7),
		Limit: int(num(8)), Cancel: str(9) != "", Join: str(10),
	}
}

// GroupMemberNames returns the names of g's members (task ids, or group
// ids for nested groups) by submission index; n is the number of members.
// A member never added (a group ended by fail fast while it was being made)
// is "".
func GroupMemberNames(ctx context.Context, rdb redis.Cmdable, g GroupRef, n int) ([]string, error) {
	out := make([]string, n)
	const page = 10000
	for from := 0; from < n; from += page {
		v, err := rdb.ZRangeByScoreWithScores(ctx, g.Home.GroupOrder(g.ID), &redis.ZRangeBy{Min: strconv.Itoa(from), Max: strconv.Itoa(from + page - 1)}).Result()
		if err != nil {
			return nil, fmt.Errorf("read members of group %s: %w", g, err)
		}
		for _, z := range v {
			if i := int(z.Score); i >= 0 && i < n {
				out[i] = z.Member.(string)
			}
		}
	}
	var cursor uint64
	for {
		kv, next, err := rdb.HScan(ctx, g.Home.Group(g.ID), cursor, "e:*", 1000).Result()
		if err != nil {
			return nil, fmt.Errorf("read members of group %s: %w", g, err)
		}
		for i := 1; i < len(kv); i += 2 {
			if err := ParseChunk(kv[i], g.Home.Name, out); err != nil {
				return nil, fmt.Errorf("group %s: %w", g, err)
			}
		}
		if next == 0 {
			return out, nil
		}
		cursor = next
	}
}

// ParseChunk puts the members of a chunk record ("<index>,...;<entry
// id>,...", see groupenq.lua) of queue into out by index.
func ParseChunk(rec, queue string, out []string) error {
	idx, ids, ok := strings.Cut(rec, ";")
	if !ok {
		return fmt.Errorf("chunk record %.40q has no ';'", rec)
	}
	is, es := strings.Split(idx, ","), strings.Split(ids, ",")
	if len(is) != len(es) {
		return fmt.Errorf("chunk record %.40q: %d indices, %d ids", rec, len(is), len(es))
	}
	for j, x := range is {
		i, err := strconv.Atoi(x)
		if err != nil {
			return fmt.Errorf("chunk record %.40q: index %q", rec, x)
		}
		if i >= 0 && i < len(out) {
			out[i] = keys.TaskID(queue, es[j])
		}
	}
	return nil
}

// cancelChunk bounds the cancel calls of one pipeline.
const cancelChunk = 256

// CancelOpenMembers cancels every open member of g (tasks, and nested
// groups), and the nested groups whose join is a member. A member that
// was never created (its creator failed, or was refused once the group was
// being cancelled) counts as cancelled. It then lets the group end if no
// member is open. It returns the queues whose outboxes were written.
func CancelOpenMembers(ctx context.Context, rdb redis.UniversalClient, g GroupRef, reason string, retainMs int64) ([]keys.Queue, error) {
	t := newTouched()
	var cursor uint64
	for {
		ms, next, err := rdb.SScan(ctx, g.Home.GroupOpen(g.ID), cursor, "", cancelChunk).Result()
		if err != nil {
			return t.list, fmt.Errorf("read open members of group %s: %w", g, err)
		}
		if err := cancelMembers(ctx, rdb, g, ms, reason, retainMs, t); err != nil {
			return t.list, err
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	// Nested groups that stand in this one through their join.
	kv, err := rdb.HGetAll(ctx, g.Home.Group(g.ID)).Result()
	if err != nil {
		return t.list, fmt.Errorf("read group %s: %w", g, err)
	}
	var nested []string
	for k, v := range kv {
		if strings.HasPrefix(k, "nest:") {
			nested = append(nested, v)
		}
	}
	if err := cancelMembers(ctx, rdb, g, nested, reason, retainMs, t); err != nil {
		return t.list, err
	}
	// The group may have no open member left (its last ones never existed).
	_, wrote, err := EndMembers(ctx, rdb, g, nil)
	if err != nil {
		return t.list, err
	}
	if wrote {
		t.add(g.Home)
	}
	return t.list, nil
}

// CancelMembers cancels the named members of g (whether open or not: an
// ended one stays as it is), as CancelOpenMembers does.
func CancelMembers(ctx context.Context, rdb redis.UniversalClient, g GroupRef, names []string, reason string, retainMs int64) ([]keys.Queue, error) {
	t := newTouched()
	for len(names) > 0 {
		n := min(len(names), cancelChunk)
		if err := cancelMembers(ctx, rdb, g, names[:n], reason, retainMs, t); err != nil {
			return t.list, err
		}
		names = names[n:]
	}
	return t.list, nil
}

// touched collects queues, once each.
type touched struct {
	seen map[string]bool
	list []keys.Queue
}

func newTouched() *touched { return &touched{seen: map[string]bool{}} }

func (t *touched) add(q keys.Queue) {
	if !t.seen[q.Name] {
		t.seen[q.Name] = true
		t.list = append(t.list, q)
	}
}

// cancelMembers cancels one pipeline's worth of members of g; those unknown
// (never created) are counted as cancelled.
// cancelLoadTries bounds the script loads of one cancelMembers.
const cancelLoadTries = 3

func cancelMembers(ctx context.Context, rdb redis.UniversalClient, g GroupRef, ms []string, reason string, retainMs int64, t *touched) error {
	type call struct {
		name string
		q    keys.Queue
		cmd  *redis.Cmd
	}
	var calls []call
	// pks are the partitions of members found waiting in one (cancel.lua
	// answered {'partition', pk}): they are called again, with the list.
	pks := map[string]string{}
	todo := ms
	parts, loads := 0, 0
	for {
		calls = calls[:0]
		_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, m := range todo {
				if m == "" || m == OpenMember {
					continue
				}
				if keys.IsGroupID(m) {
					sub, err := ParseGroupRef(m)
					if err != nil {
						continue
					}
					sh := sub.Home
					calls = append(calls, call{m, sh, script.GroupCancel.EvalSha(ctx, p, []string{sh.Group(sub.ID), sh.GroupOpen(sub.ID), sh.Outbox()}, sub.String(), reason)})
					continue
				}
				qn, key, err := keys.SplitTaskID(m)
				if err != nil {
					continue
				}
				q := keys.ForQueue(qn)
				ks, idx := CancelKeys(q, key, pks[m])
				calls = append(calls, call{m, q, script.Cancel.EvalSha(ctx, p, ks, keys.Group, key, q.Done(), q.Ctl(), retainMs, reason, m, idx, pks[m])})
			}
			return nil
		})
		var first error
		noScript := false
		var unknown []MemberEnd
		var again []string
		for _, c := range calls {
			v, err := c.cmd.Result()
			switch {
			case err == nil:
				if pk, ok := partitionReply(replyStrings(v)); ok {
					pks[c.name] = pk
					again = append(again, c.name)
					continue
				}
				t.add(c.q)
				if replyState(v) == "" {
					unknown = append(unknown, MemberEnd{Member: c.name, State: "cancelled"})
				}
			case strings.HasPrefix(err.Error(), "NOSCRIPT"):
				noScript = true
			case strings.HasPrefix(err.Error(), "NOGROUP"):
				unknown = append(unknown, MemberEnd{Member: c.name, State: "cancelled"})
			default:
				if first == nil {
					first = err
				}
			}
		}
		if noScript {
			// Redis lost its scripts (a restart, a failover to a replica,
			// in any round): load them, send the round again (a cancel
			// repeated changes nothing).
			if loads++; loads > cancelLoadTries {
				return fmt.Errorf("cancel members of group %s: Redis lost its scripts %d times while cancelling", g, loads)
			}
			if err := script.Load(ctx, rdb); err != nil {
				return err
			}
			continue
		}
		if first != nil {
			return fmt.Errorf("cancel members of group %s: %w", g, first)
		}
		if len(unknown) > 0 {
			_, wrote, err := EndMembers(ctx, rdb, g, unknown)
			if err != nil {
				return err
			}
			if wrote {
				t.add(g.Home)
			}
		}
		if len(again) > 0 {
			// Members waiting in a partition: cancelled by a second call
			// that declares its list (see Cancel).
			if parts++; parts == cancelPartTries {
				return fmt.Errorf("cancel members of group %s: the partition of %s changed %d times while cancelling it", g, again[0], cancelPartTries)
			}
			todo = again
			continue
		}
		return nil
	}
}

// replyState is the state a cancel script answered: cancel.lua's {state} or
// groupcancel.lua's state.
func replyState(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []any:
		if len(x) > 0 {
			s, _ := x[0].(string)
			return s
		}
	}
	return ""
}

// replyStrings is a script's array answer of strings (others are left
// out).
func replyStrings(v any) []string {
	x, _ := v.([]any)
	out := make([]string, 0, len(x))
	for _, e := range x {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// A ForkJoin's join waits (held) from before its group is sealed. Should
// the creator die before sealing, the group's keys expire after
// UnsealedTTL; ExpireUnsealedJoin gives the join's record the same
// lifetime, so that it goes too rather than wait for ever, and
// KeepSealedJoin takes it back once the group is sealed (the group then
// lives until it ends, and fires the join). Either leaves a record that is
// gone or past the state it looks for alone. Both are one script
// (jointtl.lua), which go-redis may resend after a lost reply, where a
// WATCH/MULTI/EXEC transaction it does not resend.

// ExpireUnsealedJoin sets the lifetime of the join with key key in q to
// UnsealedTTL while it is waiting.
func ExpireUnsealedJoin(ctx context.Context, rdb redis.Scripter, q keys.Queue, key string) error {
	if err := script.JoinTTL.Run(ctx, rdb, []string{q.Task(key)}, "expire", UnsealedTTL.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("bound the join %s to its unsealed group: %w", keys.TaskID(q.Name, key), err)
	}
	return nil
}

// KeepSealedJoin removes the lifetime ExpireUnsealedJoin set, unless the join
// ended (its record then keeps its retention).
func KeepSealedJoin(ctx context.Context, rdb redis.Scripter, q keys.Queue, key string) error {
	if err := script.JoinTTL.Run(ctx, rdb, []string{q.Task(key)}, "keep", "").Err(); err != nil {
		return fmt.Errorf("keep the join %s of a sealed group: %w", keys.TaskID(q.Name, key), err)
	}
	return nil
}
