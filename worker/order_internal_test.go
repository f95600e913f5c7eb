package worker

import (
	"testing"

	"github.com/taskfleet/async/internal/keys"
)

func TestOrderFollowsWeights(t *testing.T) {
	t.Parallel()
	w := &Worker{}
	for name, wt := range map[string]int{"a": 6, "b": 1} {
		w.queues = append(w.queues, &queue{keys: keys.ForQueue(name), weight: wt})
	}
	first := map[string]int{}
	const n = 7000
	for i := 0; i < n; i++ {
		o := w.order(w.queues)
		if len(o) != 2 || o[0] == o[1] {
			t.Fatalf("got order %v; want both queues once", o)
		}
		first[o[0].keys.Name]++
	}
	// a leads with probability 6/7: 6000 expected; allow ±5 standard deviations (~150).
	if got := first["a"]; got < 5850 || got > 6150 {
		t.Fatalf("got queue a first %d times of %d; want about 6000", got, n)
	}
	w.cfg.StrictPriority = true
	w.queues[0], w.queues[1] = w.queues[1], w.queues[0]
	if o := w.order(w.queues); o[0] != w.queues[0] {
		t.Fatal("strict priority must keep the configured order")
	}
}
