package maintain_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/maintain"
	"github.com/taskfleet/async/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

// A zero setting takes its default; a set one is kept.
func TestSettingsDefaults(t *testing.T) {
	s := maintain.Settings{DeadLetterCap: 7}.WithDefaults()
	if s.DeadLetterCap != 7 || s.ConsumerIdle != maintain.DefaultConsumerIdle || s.Retention != maintain.DefaultRetention {
		t.Fatalf("got %+v", s)
	}
}

// ForwardDue on a queue with nothing scheduled moves nothing and reports
// Redis' time; Housekeep caps the dead letters at the Keeper's setting,
// keeping the newest.
func TestForwardAndHousekeep(t *testing.T) {
	env := testenv.Redis(t)
	ctx := context.Background()
	q := keys.ForQueue(testenv.Queue(t))
	k := maintain.New(env.RDB, maintain.Settings{DeadLetterCap: 2})

	due, err := k.ForwardDue(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if due.Moved != 0 || due.More || due.NextMs != -1 || due.NowMs <= 0 {
		t.Fatalf("ForwardDue: %+v, want nothing moved, nothing due, Redis' time", due)
	}

	for i := range 4 {
		if err := env.RDB.ZAdd(ctx, q.Dead(), redis.Z{Score: float64(1000 + i), Member: fmt.Sprintf("d%d", i)}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := k.Housekeep(ctx, q); err != nil {
		t.Fatal(err)
	}
	left, err := env.RDB.ZRange(ctx, q.Dead(), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(left) != "[d2 d3]" {
		t.Fatalf("dead letters after Housekeep: %v, want the newest 2", left)
	}
}
