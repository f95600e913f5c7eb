package store_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// groupcont.lua run twice on a running group (a resend, or the same
// continuation registered again) lists the continuation once: the group's
// end would otherwise put it into the outbox once per copy.
func TestGroupContinuationRegisteredTwiceListedOnce(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	g := store.GroupRef{Home: q, ID: "g1"}
	if st, _, err := store.NewGroup(ctx, rdb, g, store.GroupSettings{Members: 1}, ""); err != nil || st != "new" {
		t.Fatalf("NewGroup = %q, %v", st, err)
	}
	spec := store.ContSpec(q.Name, "c1", false)
	for i := range 2 {
		fired, err := store.AddGroupContinuation(ctx, rdb, g, spec)
		if err != nil || fired {
			t.Fatalf("registration %d: fired %v, %v; want registered", i+1, fired, err)
		}
	}
	other := store.ContSpec(q.Name, "c2", true)
	if _, err := store.AddGroupContinuation(ctx, rdb, g, other); err != nil {
		t.Fatal(err)
	}
	got, err := rdb.LRange(ctx, q.GroupConts(g.ID), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{spec, other}; !slices.Equal(got, want) {
		t.Fatalf("the group lists continuations %q, want %q", got, want)
	}
}

// isolatedDB is this package's database for testenv.IsolatedRedis.
const isolatedDB = 8

// proxied returns a client of a Redis of the test's own through a fault
// proxy, the proxy, a client of the Redis itself, and a queue; the scripts
// are loaded, so that a faulted call is the EVALSHA itself.
func proxied(t *testing.T) (redis.UniversalClient, *testenv.FaultProxy, redis.UniversalClient, keys.Queue) {
	t.Helper()
	e := testenv.IsolatedRedis(t, isolatedDB)
	if err := script.Load(context.Background(), e.RDB); err != nil {
		t.Fatal(err)
	}
	p := testenv.NewFaultProxy(t, e.Addr)
	return p.NewClient(t, e), p, e.RDB, keys.ForQueue(testenv.Queue(t))
}

// applying matches the call that applies a change: a script, or the EXEC
// of a transaction.
var applying = testenv.MatchName("EVALSHA", "EVAL", "EXEC")

// A ForkJoin's join is bound to its unsealed group, and kept once it is
// sealed, although the reply of the call that does it is lost once or twice
// (go-redis resends a script; it never resent the EXEC of the transaction
// this was before).
func TestJoinLifetimeSurvivesLostReply(t *testing.T) {
	for _, times := range []int{1, 2} {
		rdb, p, direct, q := proxied(t)
		ctx := context.Background()
		join := q.Task("g.join")
		if err := direct.HSet(ctx, join, "st", "waiting", "m", "x").Err(); err != nil {
			t.Fatal(err)
		}

		p.DropReply(applying, 1, times)
		if err := store.ExpireUnsealedJoin(ctx, rdb, q, "g.join"); err != nil {
			t.Fatalf("reply lost %d times: ExpireUnsealedJoin: %v", times, err)
		}
		if n := p.Dropped(); n != times {
			t.Fatalf("%d replies dropped, want %d", n, times)
		}
		ttl := direct.PTTL(ctx, join).Val()
		if ttl <= 0 || ttl > store.UnsealedTTL {
			t.Fatalf("reply lost %d times: the waiting join lives %v, want at most %v", times, ttl, store.UnsealedTTL)
		}

		p.ClearRules()
		p.DropReply(applying, 1, times)
		if err := store.KeepSealedJoin(ctx, rdb, q, "g.join"); err != nil {
			t.Fatalf("reply lost %d times: KeepSealedJoin: %v", times, err)
		}
		if n := p.Dropped(); n != 2*times {
			t.Fatalf("%d replies dropped in all, want %d", n, 2*times)
		}
		if ttl := direct.PTTL(ctx, join).Val(); ttl != -1 {
			t.Fatalf("reply lost %d times: the join of a sealed group lives %v, want no expiry", times, ttl)
		}
	}
}

// ExpireUnsealedJoin bounds only a waiting join, KeepSealedJoin keeps all but
// an ended one (which keeps its retention), and neither creates a record.
func TestJoinLifetimeByState(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	const retain = time.Hour
	for _, tt := range []struct {
		st           string
		expire, keep bool // whether each changes the lifetime
	}{
		{"waiting", true, true},
		{"pending", false, true},
		{"running", false, true},
		{"succeeded", false, false},
		{"dead", false, false},
		{"cancelled", false, false},
	} {
		key := "j-" + tt.st
		k := q.Task(key)
		if err := rdb.HSet(ctx, k, "st", tt.st).Err(); err != nil {
			t.Fatal(err)
		}
		rdb.PExpire(ctx, k, retain)
		if err := store.ExpireUnsealedJoin(ctx, rdb, q, key); err != nil {
			t.Fatal(err)
		}
		ttl := rdb.PTTL(ctx, k).Val()
		if got := ttl > retain; got != tt.expire {
			t.Errorf("%s: ExpireUnsealedJoin left a lifetime of %v; want it set to %v: %v", tt.st, ttl, store.UnsealedTTL, tt.expire)
		}
		if err := store.KeepSealedJoin(ctx, rdb, q, key); err != nil {
			t.Fatal(err)
		}
		ttl = rdb.PTTL(ctx, k).Val()
		if got := ttl == -1; got != tt.keep {
			t.Errorf("%s: KeepSealedJoin left a lifetime of %v; want it removed: %v", tt.st, ttl, tt.keep)
		}
	}
	if err := store.ExpireUnsealedJoin(ctx, rdb, q, "none"); err != nil {
		t.Fatal(err)
	}
	if err := store.KeepSealedJoin(ctx, rdb, q, "none"); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, q.Task("none")).Val(); n != 0 {
		t.Fatal("a missing join's record was created")
	}
}

// AddKids records the children once and bounds the set's lifetime although
// the reply of its call is lost once or twice (it was a MULTI/EXEC, which
// go-redis does not resend).
func TestAddKidsSurvivesLostReply(t *testing.T) {
	for _, times := range []int{1, 2} {
		rdb, p, direct, q := proxied(t)
		ctx := context.Background()
		p.DropReply(applying, 1, times)
		ids := []string{q.Name + "/a", q.Name + "/b"}
		if err := store.AddKids(ctx, rdb, q, "parent", ids); err != nil {
			t.Fatalf("reply lost %d times: AddKids: %v", times, err)
		}
		if n := p.Dropped(); n != times {
			t.Fatalf("%d replies dropped, want %d", n, times)
		}
		got, err := store.Kids(ctx, direct, q, "parent")
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		if !slices.Equal(got, ids) {
			t.Fatalf("kids %q, want %q", got, ids)
		}
		if ttl := direct.PTTL(ctx, q.Kids("parent")).Val(); ttl <= 0 || ttl > 7*24*time.Hour {
			t.Fatalf("the kids set lives %v, want at most 7 days", ttl)
		}
	}
}

// AddKids with more children than one SADD of the script takes records them
// all.
func TestAddKidsMany(t *testing.T) {
	t.Parallel()
	rdb, q := env(t)
	ctx := context.Background()
	ids := make([]string, 2500)
	for i := range ids {
		ids[i] = q.Name + "/k" + strconv.Itoa(i)
	}
	if err := store.AddKids(ctx, rdb, q, "p", ids); err != nil {
		t.Fatal(err)
	}
	if err := store.AddKids(ctx, rdb, q, "p", ids[:10]); err != nil {
		t.Fatal(err)
	}
	if n := rdb.SCard(ctx, q.Kids("p")).Val(); n != int64(len(ids)) {
		t.Fatalf("%d kids recorded, want %d", n, len(ids))
	}
}
