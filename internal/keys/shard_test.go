package keys

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestShardNames(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		queue string
		i     int
		salt  string
	}{{"uploads", 3, "k2f"}, {"a", 0, "0"}, {"A-Z_0.9", MaxShards - 1, "zzzzzz"}, {strings.Repeat("x", MaxNameLen), 1000, "100000"}} {
		name := ShardName(c.queue, c.i, c.salt)
		q, i, ok := ParseShard(name)
		if !ok || q != c.queue || i != c.i || !IsShard(name) {
			t.Errorf("ParseShard(%q) = %q %d %v; want %q %d true", name, q, i, ok, c.queue, c.i)
		}
		if err := ValidatePhysicalQueue(name); err != nil {
			t.Errorf("ValidatePhysicalQueue(%q) = %v; want nil", name, err)
		}
		// A user cannot name a queue so: the public rule refuses '~'.
		if err := ValidateName("queue", name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v; want ErrInvalidName", name, err)
		}
		if len(name) > MaxPhysicalLen {
			t.Errorf("%q is %d bytes, more than MaxPhysicalLen %d", name, len(name), MaxPhysicalLen)
		}
	}
	if got, want := ShardName("uploads", 3, "k2f"), "uploads~3.k2f"; got != want {
		t.Fatalf("ShardName = %q; want %q", got, want)
	}
	// A shard's name is a queue name like any other for its keys: one tag.
	if got, want := ForQueue("uploads~3.k2f").Stream(), "async:{q:uploads~3.k2f}:stream"; got != want {
		t.Fatalf("ForQueue(shard).Stream() = %q; want %q", got, want)
	}
	for _, bad := range []string{
		"uploads", "~1.a", "uploads~", "uploads~1", "uploads~1.", "uploads~.a", "uploads~01.a", "uploads~1.0a",
		"uploads~1.A", "uploads~-1.a", "uploads~+1.a", "uploads~1024.a", "uploads~1.a.b", "up:loads~1.a",
		"uploads~1.a~2.b", "uploads~1.zzzzzzz", "uploads~00001.a", strings.Repeat("x", MaxNameLen+1) + "~1.a",
	} {
		if q, i, ok := ParseShard(bad); ok || IsShard(bad) {
			t.Errorf("ParseShard(%q) = %q %d true; want not a shard", bad, q, i)
		}
	}
	for _, bad := range []string{"uploads~", "uploads~01.a", "a~1.A", "a:b", "", strings.Repeat("x", MaxPhysicalLen) + "~1.a"} {
		if err := ValidatePhysicalQueue(bad); !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), "queue name") {
			t.Errorf("ValidatePhysicalQueue(%q) = %v; want ErrInvalidName naming the queue", bad, err)
		}
	}
	if err := ValidatePhysicalQueue("uploads"); err != nil {
		t.Errorf("ValidatePhysicalQueue(uploads) = %v", err)
	}
}

// CRC16 and Slot agree with Redis Cluster's specification and with
// go-redis' own routing (the vectors of its internal/hashtag tests);
// store's TestShardSlotsOnCluster checks them against CLUSTER KEYSLOT of
// a real cluster.
func TestCRC16(t *testing.T) {
	t.Parallel()
	bin := string([]byte{83, 153, 134, 118, 229, 214, 244, 75, 140, 37, 215, 215})
	for s, want := range map[string]uint16{"123456789": 0x31C3, bin: 21847, "": 0} {
		if got := CRC16(s); got != want {
			t.Errorf("CRC16(%q) = %#x; want %#x", s, got, want)
		}
	}
	for key, want := range map[string]int{"123456789": 12739, "{}foo": 9500, "foo{}": 5542, "foo{}{bar}": 8363, bin: 5463} {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d; want %d", key, got, want)
		}
	}
	for _, p := range [][2]string{{"foo{bar}", "bar"}, {"{foo}bar", "foo"}, {"{user1000}.following", "{user1000}.followers"}, {"foo{{bar}}zap", "{bar"}, {"foo{bar}{zap}", "bar"}} {
		if Slot(p[0]) != Slot(p[1]) {
			t.Errorf("Slot(%q) = %d, Slot(%q) = %d; want equal", p[0], Slot(p[0]), p[1], Slot(p[1]))
		}
	}
	for _, q := range []string{"uploads", "uploads~3.k2f"} {
		k := ForQueue(q)
		for _, key := range []string{k.Stream(), k.Task("1-2"), k.Dead()} {
			if Slot(key) != QueueSlot(q) {
				t.Errorf("Slot(%q) = %d; QueueSlot(%q) = %d", key, Slot(key), q, QueueSlot(q))
			}
		}
	}
}

// evenMasters is the slot map redis-cli --cluster create makes for m
// masters (contiguous ranges of nearly equal size).
func evenMasters(m int) [][]SlotRange {
	out := make([][]SlotRange, m)
	for i := range m {
		out[i] = []SlotRange{{i * Slots / m, (i+1)*Slots/m - 1}}
	}
	return out
}

// owners counts the shards whose tag lands on each master of masters.
func owners(t *testing.T, names []string, masters [][]SlotRange) []int {
	t.Helper()
	count := make([]int, len(masters))
	for _, name := range names {
		s := QueueSlot(name)
		found := false
		for mi, rs := range masters {
			if slices.ContainsFunc(rs, func(r SlotRange) bool { return s >= r.Start && s <= r.End }) {
				count[mi]++
				found = true
			}
		}
		if !found {
			t.Fatalf("shard %q: slot %d is on no master", name, s)
		}
	}
	return count
}

// On one Redis (every slot on one master) the shards' slots are evenly
// apart over 0..16383, so that the layout is even on a cluster the data
// moves to later; different queues start at different slots.
func TestPlaceShardsEvenSlots(t *testing.T) {
	t.Parallel()
	one := [][]SlotRange{{{0, Slots - 1}}}
	firsts := map[int]string{}
	for _, q := range []string{"uploads", "emails", "thumbs", "q1", "q2"} {
		for _, n := range []int{1, 2, 12, 100} {
			names, err := PlaceShards(q, n, one)
			if err != nil {
				t.Fatal(err)
			}
			if len(names) != n {
				t.Fatalf("%d names; want %d", len(names), n)
			}
			slots := make([]int, n)
			for i, name := range names {
				qq, ii, ok := ParseShard(name)
				if !ok || qq != q || ii != i {
					t.Fatalf("name %d %q: ParseShard = %q %d %v", i, name, qq, ii, ok)
				}
				slots[i] = QueueSlot(name)
			}
			if n == 12 {
				firsts[slots[0]] = q
			}
			// Shard i's slot is i*16384/n past shard 0's (mod 16384):
			// gaps of floor or ceil 16384/n.
			for i := 1; i < n; i++ {
				gap := (slots[i] - slots[i-1] + Slots) % Slots
				if gap != Slots/n && gap != Slots/n+1 {
					t.Errorf("queue %s, %d shards: slots %v: gap %d between shards %d and %d; want %d or %d", q, n, slots, gap, i-1, i, Slots/n, Slots/n+1)
				}
			}
		}
	}
	if len(firsts) != 5 {
		t.Errorf("five queues' first shards share slots: %v", firsts)
	}
}

// PlaceShards covers the masters evenly: 12 shards on 6 masters are 2 per
// master, on 3 masters 4; 100 masters take 1 of 100 shards and 2 or 3 of
// 250; so do masters whose slots are in several ranges, given in any order.
func TestPlaceShardsOverMasters(t *testing.T) {
	t.Parallel()
	// Six masters, each with two ranges (as after a resharding), listed
	// out of slot order.
	var split [][]SlotRange
	for i := range 6 {
		a := i * Slots / 12
		b := (i + 6) * Slots / 12
		split = append(split, []SlotRange{{b, (i+7)*Slots/12 - 1}, {a, (i+1)*Slots/12 - 1}})
	}
	slices.Reverse(split)
	for _, c := range []struct {
		name    string
		masters [][]SlotRange
		n       int
	}{
		{"3 masters", evenMasters(3), 12},
		{"6 masters", evenMasters(6), 12},
		{"6 masters", evenMasters(6), 13},
		{"6 masters, split ranges", split, 12},
		{"100 masters", evenMasters(100), 100},
		{"100 masters", evenMasters(100), 250},
	} {
		t.Run(fmt.Sprintf("%s/%d", c.name, c.n), func(t *testing.T) {
			t.Parallel()
			for _, q := range []string{"uploads", "emails", "q-" + strconv.Itoa(c.n)} {
				names, err := PlaceShards(q, c.n, c.masters)
				if err != nil {
					t.Fatal(err)
				}
				m := len(c.masters)
				for mi, k := range owners(t, names, c.masters) {
					if k != c.n/m && k != (c.n+m-1)/m {
						t.Errorf("queue %s: master %d holds %d of %d shards; want %d or %d", q, mi, k, c.n, c.n/m, (c.n+m-1)/m)
					}
				}
				again, err := PlaceShards(q, c.n, slices.Clone(c.masters))
				if err != nil || !slices.Equal(again, names) {
					t.Errorf("queue %s: placed again %v %v; want the same names", q, again, err)
				}
			}
		})
	}
	// The masters in another order place the same names.
	a, err := PlaceShards("uploads", 12, split)
	if err != nil {
		t.Fatal(err)
	}
	rev := slices.Clone(split)
	slices.Reverse(rev)
	if b, err := PlaceShards("uploads", 12, rev); err != nil || !slices.Equal(a, b) {
		t.Errorf("masters reordered: %v %v; want %v", b, err, a)
	}
}

// A shard's salt is the smallest one that puts it on its slot.
func TestShardSaltSmallest(t *testing.T) {
	t.Parallel()
	names, err := PlaceShards("uploads", 6, evenMasters(3))
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		salt := name[strings.LastIndexByte(name, '.')+1:]
		k, err := strconv.ParseInt(salt, 36, 64)
		if err != nil {
			t.Fatal(err)
		}
		want := QueueSlot(name)
		for j := range k {
			if QueueSlot(ShardName("uploads", i, strconv.FormatInt(j, 36))) == want {
				t.Fatalf("shard %d: salt %s lands on slot %d too, and is smaller than %s", i, strconv.FormatInt(j, 36), want, salt)
			}
		}
	}
}

func TestPlaceShardsRefuses(t *testing.T) {
	t.Parallel()
	one := [][]SlotRange{{{0, Slots - 1}}}
	for _, c := range []struct {
		queue   string
		n       int
		masters [][]SlotRange
		want    string
	}{
		{"uploads", 0, one, "0 shards"},
		{"uploads", MaxShards + 1, one, "1025 shards"},
		{"uploads", 4, nil, "no master"},
		{"uploads", 4, [][]SlotRange{{{0, 10}}, {}}, "serves no slot"},
		{"uploads", 4, [][]SlotRange{{{0, 10}}, {{10, 20}}}, "slot 10 is served by two masters"},
		{"uploads", 4, [][]SlotRange{{{0, Slots}}}, "not within"},
		{"uploads", 4, [][]SlotRange{{{5, 4}}}, "not within"},
	} {
		_, err := PlaceShards(c.queue, c.n, c.masters)
		if !errors.Is(err, ErrPlacement) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.queue) {
			t.Errorf("PlaceShards(%q, %d, %v) = %v; want ErrPlacement saying %q", c.queue, c.n, c.masters, err, c.want)
		}
	}
	if _, err := PlaceShards("up~loads", 4, one); !errors.Is(err, ErrInvalidName) {
		t.Errorf("PlaceShards of a queue named with '~' = %v; want ErrInvalidName", err)
	}
}
