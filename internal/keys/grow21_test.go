package keys

import (
	"fmt"
	"testing"
)

// Growing a queue from n to m shards moves a key only to one of the new
// shards n..m-1, and about (m-n)/m of the keys move; the keys spread
// evenly over the shards.
func TestJumpShardMovesOnlyToNewShards(t *testing.T) {
	const keysN = 20000
	for _, c := range []struct{ n, m int }{{1, 2}, {2, 4}, {4, 6}, {12, 16}, {6, 100}} {
		moved := 0
		per := make([]int, c.m)
		for k := range keysN {
			key := fmt.Sprintf("user:%d", k)
			a, b := JumpShard(key, c.n), JumpShard(key, c.m)
			if a < 0 || a >= c.n || b < 0 || b >= c.m {
				t.Fatalf("%q: shard %d of %d, %d of %d: out of range", key, a, c.n, b, c.m)
			}
			if a != b {
				moved++
				if b < c.n {
					t.Fatalf("%q moved from shard %d to %d growing %d to %d: not a new shard", key, a, b, c.n, c.m)
				}
			}
			per[b]++
		}
		want := float64(c.m-c.n) / float64(c.m)
		if got := float64(moved) / keysN; got < want-0.03 || got > want+0.03 {
			t.Errorf("growing %d to %d moved %.3f of the keys, want %.3f±0.03", c.n, c.m, got, want)
		}
		even := float64(keysN) / float64(c.m)
		for i, p := range per {
			// A binomial count: six standard deviations of slack.
			if d := float64(p) - even; d*d > 36*even {
				t.Errorf("%d shards: shard %d has %d keys, even is %.0f", c.m, i, p, even)
			}
		}
	}
}

// The new shards of a grown queue go to the masters with the fewest of its
// shards, on slots no shard of the queue uses; the old names stay.
func TestGrowShardsPlacement(t *testing.T) {
	masters := [][]SlotRange{{{0, 5460}}, {{5461, 10922}}, {{10923, 16383}}}
	have, err := PlaceShards("up", 4, masters) // masters hold 2, 1, 1
	if err != nil {
		t.Fatal(err)
	}
	add, err := GrowShards("up", have, 9, masters)
	if err != nil {
		t.Fatal(err)
	}
	if len(add) != 5 {
		t.Fatalf("%d new names, want 5", len(add))
	}
	count := make([]int, 3)
	used := map[int]bool{}
	for i, name := range append(append([]string{}, have...), add...) {
		q, j, ok := ParseShard(name)
		if !ok || q != "up" || j != i {
			t.Fatalf("name %d is %q", i, name)
		}
		s := QueueSlot(name)
		if used[s] {
			t.Errorf("slot %d used twice", s)
		}
		used[s] = true
		switch {
		case s <= 5460:
			count[0]++
		case s <= 10922:
			count[1]++
		default:
			count[2]++
		}
	}
	for mi, c := range count {
		if c != 3 {
			t.Errorf("master %d has %d of 9 shards, want 3 (counts %v)", mi, c, count)
		}
	}
	again, err := GrowShards("up", have, 9, masters)
	if err != nil || fmt.Sprint(again) != fmt.Sprint(add) {
		t.Errorf("the same growth again = %v %v, want %v", again, err, add)
	}
	for _, bad := range []int{4, 3, MaxShards + 1} {
		if _, err := GrowShards("up", have, bad, masters); err == nil {
			t.Errorf("growing 4 shards to %d: no error", bad)
		}
	}
	if _, err := GrowShards("up", []string{have[1]}, 2, masters); err == nil {
		t.Error("shards given out of order: no error")
	}
}
