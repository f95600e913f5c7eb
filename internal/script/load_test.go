package script_test

import (
	"context"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/taskfleet/async/internal/script"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// loadCounter counts the SCRIPT LOAD commands a client sends.
type loadCounter struct{ n atomic.Int64 }

func (c *loadCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *loadCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if a := cmd.Args(); len(a) > 1 && strings.EqualFold(a[0].(string), "script") && strings.EqualFold(a[1].(string), "load") {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (c *loadCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Every process of a fleet calls Load as it starts: the scripts the server
// has already are not sent again, and those it lost (SCRIPT FLUSH, a
// restart) are.
func TestLoadSendsOnlyMissingScripts(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	var c loadCounter
	rdb.AddHook(&c)
	ctx := context.Background()
	if err := script.Load(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	first := c.n.Load()
	if first == 0 {
		t.Fatal("the first Load sent no script")
	}
	if err := script.Load(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	if n := c.n.Load() - first; n != 0 {
		t.Fatalf("a second Load sent %d scripts the server had", n)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := script.Load(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	if n := c.n.Load() - first; n != first {
		t.Fatalf("after SCRIPT FLUSH Load sent %d scripts, want all %d", n, first)
	}
	if ok, err := rdb.ScriptExists(ctx, script.Enqueue.Hash()).Result(); err != nil || !ok[0] {
		t.Fatalf("enqueue.lua not loaded: %v %v", ok, err)
	}
}

// Each script carries the helpers of lib.lua it calls, and only those.
func TestScriptsCarryTheHelpersTheyCall(t *testing.T) {
	total := 0
	for name, s := range script.Sources() {
		total += len(s)
		for _, h := range script.LibNames() {
			defined := strings.Contains(s, "local function "+h+"(")
			uses := len(regexp.MustCompile(`(^|[^A-Za-z0-9_])`+h+`\s*\(`).FindAllStringIndex(s, -1))
			called := uses > boolInt(defined)
			if called && !defined {
				t.Errorf("%s calls %s but does not define it", name, h)
			}
			if defined && !called {
				t.Errorf("%s defines %s but never calls it", name, h)
			}
		}
	}
	t.Logf("%d bytes of Lua in all", total)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
