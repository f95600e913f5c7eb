package keys

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"a", "uploads", "A-Z_0.9", strings.Repeat("x", 128)} {
		if err := ValidateName("queue", ok); err != nil {
			t.Errorf("ValidateName(%q) = %v; want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "a:b", "{a}", "a b", "ü", strings.Repeat("x", 129), "a/b"} {
		if err := ValidateName("queue", bad); !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), "queue") {
			t.Errorf("ValidateName(%q) = %v; want ErrInvalidName naming the queue", bad, err)
		}
	}
}

func TestIDs(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{"1-0": true, "1732-15": true, "-1": false, "1-": false, "a-1": false, "file-1": false, "12": false} {
		if got := IsEntryID(s); got != want {
			t.Errorf("IsEntryID(%q) = %v; want %v", s, got, want)
		}
	}
	q, k, err := SplitTaskID(TaskID("uploads", "1-2"))
	if err != nil || q != "uploads" || k != "1-2" {
		t.Fatalf("got %q %q %v", q, k, err)
	}
	if got, want := ForQueue("uploads").Stream(), "async:{q:uploads}:stream"; got != want {
		t.Fatalf("got %s; want %s", got, want)
	}
}
