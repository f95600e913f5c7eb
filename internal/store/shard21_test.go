package store_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// forgetShards deletes queue's registry entry when t ends.
func forgetShards(t *testing.T, rdb redis.Cmdable, queue string) {
	t.Cleanup(func() { _ = rdb.HDel(context.Background(), keys.ShardRegistry, queue).Err() })
}

// A declared queue reads back as declared; declaring it again with the
// same count answers the same set and changes nothing; another count is
// refused, naming both, and changes nothing either.
func TestDeclareShards(t *testing.T) {
	env := testenv.Redis(t)
	ctx := context.Background()
	q := testenv.Queue(t)
	forgetShards(t, env.RDB, q)

	if _, ok, err := store.Shards(ctx, env.RDB, q); ok || err != nil {
		t.Fatalf("Shards of a queue never declared = %v %v; want not ok, no error", ok, err)
	}
	s, err := store.DeclareShards(ctx, env.RDB, q, 4, store.ShardChange{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Queue != q || s.N != 4 || len(s.Names) != 4 || s.Epoch != 1 || s.CreatedMs <= 0 {
		t.Fatalf("declared %+v; want queue %s, 4 names, epoch 1, a creation time", s, q)
	}
	now, err := env.RDB.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if d := now.UnixMilli() - s.CreatedMs; d < 0 || d > 60_000 {
		t.Fatalf("created at %d, Redis' now is %d: not Redis time", s.CreatedMs, now.UnixMilli())
	}
	for i, name := range s.Names {
		if qq, j, ok := keys.ParseShard(name); !ok || qq != q || j != i {
			t.Fatalf("name %d %q is not shard %d of %s", i, name, i, q)
		}
	}
	got, ok, err := store.Shards(ctx, env.RDB, q)
	if err != nil || !ok || !equalSets(got, s) {
		t.Fatalf("Shards = %+v %v %v; want %+v", got, ok, err, s)
	}
	raw := env.RDB.HGet(ctx, keys.ShardRegistry, q).Val()

	again, err := store.DeclareShards(ctx, env.RDB, q, 4, store.ShardChange{})
	if err != nil || !equalSets(again, s) {
		t.Fatalf("declared again: %+v %v; want %+v", again, err, s)
	}
	_, err = store.DeclareShards(ctx, env.RDB, q, 6, store.ShardChange{})
	if !errors.Is(err, store.ErrShardCount) || !strings.Contains(err.Error(), q) || !strings.Contains(err.Error(), "6 shards") || !strings.Contains(err.Error(), "has 4") {
		t.Fatalf("declared with 6 shards: %v; want ErrShardCount naming the queue, 6 and 4", err)
	}
	if now := env.RDB.HGet(ctx, keys.ShardRegistry, q).Val(); now != raw {
		t.Fatalf("the registry entry changed: %q, was %q", now, raw)
	}

	for _, c := range []struct {
		queue string
		n     int
	}{{"a~b", 4}, {"", 4}, {q, 0}, {q, keys.MaxShards + 1}} {
		if _, err := store.DeclareShards(ctx, env.RDB, c.queue, c.n, store.ShardChange{}); err == nil {
			t.Errorf("DeclareShards(%q, %d) = nil error", c.queue, c.n)
		}
	}
	if _, _, err := store.Shards(ctx, env.RDB, "a~b"); !errors.Is(err, keys.ErrInvalidName) {
		t.Errorf("Shards(a~b) = %v; want ErrInvalidName", err)
	}
}

func equalSets(a, b store.ShardSet) bool {
	return a.Queue == b.Queue && a.N == b.N && slices.Equal(a.Names, b.Names) && a.Epoch == b.Epoch && a.CreatedMs == b.CreatedMs
}

// Processes declaring one queue at once all get the one set that was
// written; of two counts declared at once one wins and the other is
// refused.
func TestDeclareShardsRace(t *testing.T) {
	env := testenv.Redis(t)
	ctx := context.Background()
	for _, counts := range [][]int{{8, 8, 8, 8, 8, 8}, {4, 6, 4, 6, 4, 6}} {
		q := testenv.Queue(t)
		forgetShards(t, env.RDB, q)
		sets := make([]store.ShardSet, len(counts))
		errs := make([]error, len(counts))
		var wg sync.WaitGroup
		for i, n := range counts {
			wg.Go(func() {
				rdb := testenv.NewEnvClient(env)
				defer rdb.Close()
				sets[i], errs[i] = store.DeclareShards(ctx, rdb, q, n, store.ShardChange{})
			})
		}
		wg.Wait()
		stored, ok, err := store.Shards(ctx, env.RDB, q)
		if err != nil || !ok {
			t.Fatalf("%v: Shards = %v %v", counts, ok, err)
		}
		for i, n := range counts {
			switch {
			case n == stored.N:
				if errs[i] != nil || !equalSets(sets[i], stored) {
					t.Errorf("%v: declaration %d (%d shards) = %+v %v; want the stored %+v", counts, i, n, sets[i], errs[i], stored)
				}
			case !errors.Is(errs[i], store.ErrShardCount):
				t.Errorf("%v: declaration %d (%d shards, stored %d) = %v; want ErrShardCount", counts, i, n, stored.N, errs[i])
			}
		}
	}
}

// An entry that is not what DeclareShards writes is refused with an error
// naming the queue and what is wrong; bytes that are not msgpack at all go
// through the codec gate first.
func TestShardsBadEntry(t *testing.T) {
	env := testenv.Redis(t)
	ctx := context.Background()
	q := testenv.Queue(t)
	forgetShards(t, env.RDB, q)
	good, err := keys.PlaceShards(q, 2, [][]keys.SlotRange{{{Start: 0, End: keys.Slots - 1}}})
	if err != nil {
		t.Fatal(err)
	}
	enc := func(v any) string {
		b, err := codec.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	type entry = map[string]any
	for _, c := range []struct {
		name, val, want string
		malformed       bool
	}{
		{"reserved byte", "\xc1", "malformed msgpack", true},
		{"a huge array header", "\xdd\xff\xff\xff\xff", "declares 4294967295 elements", true},
		{"a string", enc("x"), "decode", true},
		{"n a string", enc(entry{"n": "two", "names": good, "epoch": 1, "at": 1}), "decode", true},
		{"n zero", enc(entry{"n": 0, "names": []string{}, "epoch": 1, "at": 1}), "n is 0", false},
		{"n too large", enc(entry{"n": keys.MaxShards + 1, "names": good, "epoch": 1, "at": 1}), "n is 1025", false},
		{"names short", enc(entry{"n": 3, "names": good, "epoch": 1, "at": 1}), "2 names for n = 3", false},
		{"names swapped", enc(entry{"n": 2, "names": []string{good[1], good[0]}, "epoch": 1, "at": 1}), "name 0 is", false},
		{"another queue's", enc(entry{"n": 1, "names": []string{"other~0.0"}, "epoch": 1, "at": 1}), `name 0 is "other~0.0"`, false},
		{"no epoch", enc(entry{"n": 2, "names": good, "at": 1}), "epoch is 0", false},
		{"no time", enc(entry{"n": 2, "names": good, "epoch": 1}), "created at 0", false},
	} {
		if err := env.RDB.HSet(ctx, keys.ShardRegistry, q, c.val).Err(); err != nil {
			t.Fatal(err)
		}
		_, ok, err := store.Shards(ctx, env.RDB, q)
		if ok || !errors.Is(err, store.ErrBadShardSet) || !strings.Contains(err.Error(), q) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Shards = %v %v; want ErrBadShardSet naming the queue and %q", c.name, ok, err, c.want)
		}
		if c.malformed != errors.Is(err, codec.ErrMalformed) {
			t.Errorf("%s: errors.Is(err, codec.ErrMalformed) = %v; want %v", c.name, !c.malformed, c.malformed)
		}
		// Declaring over it says so too, and leaves it.
		if _, err := store.DeclareShards(ctx, env.RDB, q, 2, store.ShardChange{}); !errors.Is(err, store.ErrBadShardSet) {
			t.Errorf("%s: DeclareShards = %v; want ErrBadShardSet", c.name, err)
		}
	}
	// The good entry, spelled by hand, reads.
	if err := env.RDB.HSet(ctx, keys.ShardRegistry, q, enc(entry{"n": 2, "names": good, "epoch": 3, "at": 5})).Err(); err != nil {
		t.Fatal(err)
	}
	s, ok, err := store.Shards(ctx, env.RDB, q)
	if err != nil || !ok || s.N != 2 || !slices.Equal(s.Names, good) || s.Epoch != 3 || s.CreatedMs != 5 {
		t.Fatalf("Shards = %+v %v %v", s, ok, err)
	}
}

// shardSpreadQueues are the queue names the spread is measured on.
var shardSpreadQueues = []string{"uploads", "emails", "thumbnails", "q-0", "q-1", "reports.daily"}

// The shards of a declared queue cover the masters evenly: on a cluster
// (ASYNC_REDIS_CLUSTER) 12 shards are 12/M on each of M masters when M
// divides 12 (2 on 6 masters, 4 on 3), by go-redis' routing and by the
// server's CLUSTER KEYSLOT; on one Redis their slots are evenly apart over
// 0..16383, ready for a cluster later.
func TestShardSpread(t *testing.T) {
	env := testenv.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	masters, err := store.SlotMasters(ctx, env.RDB)
	if err != nil {
		t.Fatal(err)
	}
	cc, cluster := env.RDB.(*redis.ClusterClient)
	m := len(masters)
	const n = 12
	u := testenv.Queue(t)
	suffix := u[len(u)-9:] // "-<8 hex digits>": the run's own names
	for _, base := range shardSpreadQueues {
		q := base + suffix
		forgetShards(t, env.RDB, q)
		start := time.Now()
		s, err := store.DeclareShards(ctx, env.RDB, q, n, store.ShardChange{})
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		owner := store.ShardMaster(s.Names, masters)
		count := make([]int, m)
		for i, mi := range owner {
			if mi < 0 {
				t.Fatalf("%s: shard %s: slot %d has no master", q, s.Names[i], keys.QueueSlot(s.Names[i]))
			}
			count[mi]++
		}
		for mi, k := range count {
			if k != n/m && k != (n+m-1)/m || n%m == 0 && k != n/m {
				t.Errorf("%s: master %d holds %d of %d shards; want %d", q, mi, k, n, n/m)
			}
		}
		if !cluster {
			slots := make([]int, n)
			for i, name := range s.Names {
				slots[i] = keys.QueueSlot(name)
			}
			for i := 1; i < n; i++ {
				if gap := (slots[i] - slots[i-1] + keys.Slots) % keys.Slots; gap != keys.Slots/n && gap != keys.Slots/n+1 {
					t.Errorf("%s: slots %v: gap %d between shards %d and %d; want %d or %d", q, slots, gap, i-1, i, keys.Slots/n, keys.Slots/n+1)
				}
			}
			t.Logf("%s: %d shards on one Redis, slots %v (declared in %v)", q, n, slots, took)
			continue
		}
		// The cluster's own view: the slot the server computes, and the
		// master go-redis sends each shard's commands to.
		byAddr := map[string]int{}
		for _, name := range s.Names {
			key := keys.ForQueue(name).Stream()
			slot, err := cc.ClusterKeySlot(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			if int(slot) != keys.Slot(key) || int(slot) != keys.QueueSlot(name) {
				t.Errorf("%s: CLUSTER KEYSLOT %s = %d; keys.Slot says %d", q, key, slot, keys.Slot(key))
			}
			node, err := cc.MasterForKey(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			byAddr[node.Options().Addr]++
		}
		if len(byAddr) != m {
			t.Errorf("%s: shards on %d masters by go-redis' routing (%v); the cluster has %d", q, len(byAddr), byAddr, m)
		}
		for addr, k := range byAddr {
			if n%m == 0 && k != n/m {
				t.Errorf("%s: master %s holds %d of %d shards by go-redis' routing; want %d", q, addr, k, n, n/m)
			}
		}
		t.Logf("%s: %d shards on %d masters: %v by go-redis' routing (declared in %v)", q, n, m, byAddr, took)
	}
	// PlaceShards's share of a declaration, for the design notes.
	start := time.Now()
	if _, err := keys.PlaceShards("uploads", 100, masters); err != nil {
		t.Fatal(err)
	}
	t.Logf("placing 100 shards on %d masters took %v", m, time.Since(start))
}
