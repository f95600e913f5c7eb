package store

import (
	"reflect"
	"testing"
	"time"

	"github.com/taskfleet/async/internal/keys"
)

// Each outcome sends complete.lua the op code and a1, a2, a3 its header
// names, in the types the worker sent before outcomes were typed (so the
// wire is the same): bytes for envelopes and results, int64 for
// milliseconds, strings for texts, ” where a value is unused.
func TestOutcomeArgsFollowCompleteHeader(t *testing.T) {
	env, res := []byte("env"), []byte("res")
	tests := []struct {
		name       string
		o          Outcome
		op         string
		a1, a2, a3 any
		scheduled  bool
	}{
		{"succeed", Succeed(res, 60000), "s", res, int64(60000), "", false},
		{"retry", Retry(env, 1500*time.Millisecond, "boom"), "r", env, int64(1500), "boom", true},
		{"retry now", Retry(env, -time.Second, "boom"), "r", env, int64(0), "boom", true},
		{"dead", Dead(env, "poison"), "d", env, "poison", "", false},
		{"park now", Park(env, 0), "p", env, int64(0), "", false},
		{"park later", Park(env, 250*time.Millisecond), "p", env, int64(250), "", true},
		{"cancelled", Cancelled(60000, "cancelled"), "c", int64(60000), "cancelled", "", false},
	}
	for _, tt := range tests {
		a1, a2, a3 := tt.o.args()
		if tt.o.op != tt.op || !reflect.DeepEqual([]any{a1, a2, a3}, []any{tt.a1, tt.a2, tt.a3}) {
			t.Errorf("%s: op %q args %#v %#v %#v; want op %q args %#v %#v %#v", tt.name, tt.o.op, a1, a2, a3, tt.op, tt.a1, tt.a2, tt.a3)
		}
		if got := tt.o.Scheduled(); got != tt.scheduled {
			t.Errorf("%s: Scheduled() = %v; want %v", tt.name, got, tt.scheduled)
		}
	}
	if _, err := Complete(t.Context(), nil, keys.ForQueue("q"), "c", []Completion{{EntryID: "1-0", Deliveries: 1, Key: "k"}}); err == nil {
		t.Error("Complete took an item without an outcome")
	}
}
