package keys

import (
	"errors"
	"testing"
)

// A task id may name a shard's physical queue (issue 21); other names with
// '~' stay refused.
func TestSplitTaskIDOfShard(t *testing.T) {
	id := TaskID(ShardName("uploads", 3, "k7"), "job-1")
	q, k, err := SplitTaskID(id)
	if err != nil || q != "uploads~3.k7" || k != "job-1" {
		t.Fatalf("SplitTaskID(%q) = %q, %q, %v", id, q, k, err)
	}
	for _, bad := range []string{"uploads~/k", "uploads~03.k7/k", "~3.k7/k", "uploads~3.K7/k", "up{x}~3.k7/k"} {
		if _, _, err := SplitTaskID(bad); !errors.Is(err, ErrInvalidName) {
			t.Errorf("SplitTaskID(%q): %v, want ErrInvalidName", bad, err)
		}
	}
}
