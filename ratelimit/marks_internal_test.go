package ratelimit

import (
	"strconv"
	"testing"
	"time"
)

// What a Limiter remembers stays bounded: 64 ids a bucket, maxMarks in all,
// and the buckets whose markers expired anyway are forgotten when full.
func TestMarksBounded(t *testing.T) {
	var m marks
	ids := make([]opID, 100)
	for i := range ids {
		ids[i] = opID{uint64(i), 1}
	}
	m.put("a", time.Minute, ids...)
	if got := m.take("a", time.Minute); len(got) != maxMarksPerBucket || got[0] != ids[0] {
		t.Fatalf("took %d ids of a bucket given 100, want the first %d", len(got), maxMarksPerBucket)
	}
	if got := m.take("a", time.Minute); got != nil || m.n != 0 {
		t.Fatalf("took %d ids again (%d held), want none", len(got), m.n)
	}

	for b := 0; b < maxMarks; b++ {
		m.put(strconv.Itoa(b), time.Minute, ids[0])
	}
	m.put("over", time.Minute, ids[0])
	if got := m.take("over", time.Minute); got != nil || m.n != maxMarks {
		t.Fatalf("a bucket past the bound of %d got %d ids, %d held", maxMarks, len(got), m.n)
	}
	// Expired (a zero TTL here): swept when the next id does not fit (at
	// most once a second: the put above swept already), and never handed
	// out.
	m.put("over", 0, ids[0])
	if m.n != maxMarks {
		t.Fatalf("%d ids held after a second sweep within a second, want %d", m.n, maxMarks)
	}
	m.swept = time.Now().Add(-2 * time.Second)
	m.put("over", 0, ids[0])
	if m.n != 1 || len(m.by) != 1 {
		t.Fatalf("%d ids in %d buckets held after the sweep, want 1 in 1", m.n, len(m.by))
	}
	if got := m.take("over", 0); got != nil {
		t.Fatalf("took %d ids whose markers expired", len(got))
	}
}
