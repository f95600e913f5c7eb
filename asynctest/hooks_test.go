package asynctest

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
)

// cancelAfter is a go-redis hook that cancels a call's ctx once a command
// naming the join of group marker (in its args) has been answered: the call fails at its
// next command, after what that one wrote.
type cancelAfter struct {
	marker string
	cancel context.CancelFunc
	once   sync.Once
}

func (h *cancelAfter) names(cmd redis.Cmder) bool {
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && strings.Contains(s, h.marker) && strings.Contains(s, ".join") {
			return true
		}
	}
	return false
}

func (h *cancelAfter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *cancelAfter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err == nil && h.names(cmd) {
			h.once.Do(h.cancel)
		}
		return err
	}
}

func (h *cancelAfter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			if err == nil && h.names(cmd) {
				h.once.Do(h.cancel)
			}
		}
		return err
	}
}

// A ForkJoin whose call ends (its ctx cancelled) right after its join was
// written, before the group was sealed, did not enqueue that join (it goes
// with the unsealed group): the fleet's record does not list it. A
// ForkJoin that succeeds lists it.
func TestForkJoinUnboundJoinNotRecorded(t *testing.T) {
	t.Parallel()
	f := NewFleet(t, registerForkJoin, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.Redis().(*fleetRDB).AddHook(&cancelAfter{marker: "unbound", cancel: cancel})
	_, err := patterns.ForkJoin(ctx, f.Client(), []client.Spec{{Args: Size{1}}, {Args: Size{2}}},
		&client.Spec{Args: Total{}}, &patterns.GroupOpts{ID: "unbound"})
	if err == nil || ctx.Err() == nil {
		t.Fatalf("ForkJoin: %v; want its ctx's end, after its join was written", err)
	}
	RequireNotEnqueued(f, Total{}.Kind(), nil)
	g, err := patterns.ForkJoin(context.Background(), f.Client(), []client.Spec{{Args: Size{3}}},
		&client.Spec{Args: Total{}}, &patterns.GroupOpts{ID: "bound"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := g.Join(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := WaitResult[int](f, h); got != 3 {
		t.Fatalf("join result %d, want 3", got)
	}
	RequireEnqueued(f, Total{}, &Want{Count: 1, ID: h.ID()})
	// The same group again adds nothing, and reports nothing.
	n := len(f.Enqueued())
	if _, err := patterns.ForkJoin(context.Background(), f.Client(), []client.Spec{{Args: Size{3}}},
		&client.Spec{Args: Total{}}, &patterns.GroupOpts{ID: "bound"}); err != nil {
		t.Fatal(err)
	}
	if got := f.Enqueued(); len(got) != n {
		t.Errorf("the group started again recorded %d more tasks: %v", len(got)-n, got[n:])
	}
}
