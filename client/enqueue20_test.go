package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/internal/testenv"
)

// markerPath is a retention shorter than any client's resend window: an
// auto-keyed task with it goes through enqueue.lua and its op marker, not
// enqueue20.lua's chosen entry id (whose resend safety leans on the task's
// record outliving the window).
const markerPath = time.Millisecond

// evalOfAny matches the EVALSHA or EVAL of any of ss.
func evalOfAny(ss ...*redis.Script) func(args []string) bool {
	return func(args []string) bool {
		for _, s := range ss {
			if evalOf(s)(args) {
				return true
			}
		}
		return false
	}
}

// The fast path's twin of TestEnqueueResentAtWindowEndAddsOnce: a lost
// reply of the one call of an auto-keyed Enqueue, resent at the end of the
// client's resend window (on miniredis), adds one entry under the id the
// client chose, and leaves no op marker.
func TestEnqueueOneResentAtWindowEndAddsOnce(t *testing.T) {
	env := proxyEnv(t)
	c, p, rdb := proxied(t, env)
	window := store.ResendWindow(rdb)
	ctx := context.Background()
	q := testenv.Queue(t)
	var h *client.Handle
	keeps, err := store.KeepsLastID(ctx, env.RDB)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	cut := p.add(&faultRule{match: evalOfAny(script.Enqueue, script.EnqueueOne), times: 1, cut: true, after: func(args []string) {
		if evalOf(script.EnqueueOne)(args) {
			id = args[7] // EVALSHA sha 4 k1 k2 k3 k4 id
		}
		if env.Mini != nil {
			env.Mini.FastForward(window)
		}
	}})
	h, err = c.Enqueue(ctx, PingArgs{Msg: "once"}, &client.EnqueueOpts{Queue: q})
	if err != nil {
		t.Fatal(err)
	}
	if p.hitCount(cut) != 1 {
		t.Fatal("the enqueue's reply was not cut")
	}
	if n := streamLen(t, env, q); n != 1 {
		t.Fatalf("one Enqueue with a lost reply left %d stream entries, want 1", n)
	}
	if h.Duplicate() {
		t.Fatal("the resend's answer says duplicate; it must be the first try's")
	}
	if !keeps {
		// A server that forgets a stream's last id on deletions
		// (miniredis): Enqueue takes enqueue.lua's op marker.
		if id != "" {
			t.Fatalf("the fast path was taken on a server that does not keep a stream's last id")
		}
		return
	}
	if h.ID() != q+"/"+id {
		t.Fatalf("handle %s; want %s/%s, the first try's", h.ID(), q, id)
	}
	if ks := env.RDB.Keys(ctx, keys.ForQueue(q).Op("*")).Val(); len(ks) != 0 {
		t.Fatalf("op markers %v; the fast path sets none", ks)
	}
}
