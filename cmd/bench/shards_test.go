package main

import (
	"math"
	"testing"

	"github.com/taskfleet/async/internal/keys"
)

func TestShardRunShare(t *testing.T) {
	tasks := func(m shardMasterFig) float64 { return float64(m.Tasks) }
	for _, tc := range []struct {
		name   string
		tasks  []int64
		shares []float64
		worst  float64
	}{
		{"even", []int64{10, 10, 10, 10}, []float64{0.25, 0.25, 0.25, 0.25}, 0},
		{"one at 15 % over", []int64{115, 95, 95, 95}, []float64{0.2875, 0.2375, 0.2375, 0.2375}, 0.15},
		{"all on one", []int64{0, 0, 30}, []float64{0, 0, 1}, 2},
		{"nothing", []int64{0, 0}, []float64{0, 0}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &shardRun{}
			for _, n := range tc.tasks {
				r.Masters = append(r.Masters, shardMasterFig{Tasks: n})
			}
			shares, worst := r.share(tasks)
			for i := range shares {
				if math.Abs(shares[i]-tc.shares[i]) > 1e-9 {
					t.Errorf("share of master %d: got %v; want %v", i, shares[i], tc.shares[i])
				}
			}
			if math.Abs(worst-tc.worst) > 1e-9 {
				t.Errorf("worst deviation: got %v; want %v", worst, tc.worst)
			}
		})
	}
}

func TestClusterMasterOf(t *testing.T) {
	c := &cluster{masters: []clusterMaster{
		{ranges: []keys.SlotRange{{Start: 0, End: 99}, {Start: 200, End: 299}}},
		{ranges: []keys.SlotRange{{Start: 100, End: 199}, {Start: 300, End: keys.Slots - 1}}},
	}}
	for slot, want := range map[int]int{0: 0, 99: 0, 100: 1, 250: 0, 300: 1, keys.Slots - 1: 1, keys.Slots: -1} {
		if got := c.masterOf(slot); got != want {
			t.Errorf("masterOf(%d): got %d; want %d", slot, got, want)
		}
	}
}

func TestClusterPortPair(t *testing.T) {
	var taken []int
	for range 6 {
		p, err := clusterPort(taken)
		if err != nil {
			t.Fatal(err)
		}
		if p < 20000 || p+10000 > 65535 {
			t.Fatalf("port %d: want 20000..55535 so that its bus port fits", p)
		}
		for _, q := range taken {
			if p == q || p == q+10000 || p+10000 == q {
				t.Fatalf("port %d clashes with %d or its bus port", p, q)
			}
		}
		taken = append(taken, p)
	}
}
