package keys_test

import (
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/ratelimit"
	"github.com/taskfleet/async/worker"
)

// wireDocPath is the document of the wire format, whose key table these
// tests keep true (docs/wire.md, "Keys").
const wireDocPath = "../../docs/wire.md"

// keyRow is one row of the key table.
type keyRow struct {
	pattern string // "async:{q:<queue>}:t:<key>"
	typ     string // the Redis type, or "channel"
	goExpr  string // how package keys builds it: "Queue.Task(key)"
}

// keyTable parses the table that follows "<!-- wiredoc:keys -->".
func keyTable(t *testing.T) (string, []keyRow) {
	t.Helper()
	b, err := os.ReadFile(wireDocPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	_, rest, ok := strings.Cut(doc, "<!-- wiredoc:keys -->\n")
	if !ok {
		t.Fatalf("%s: no key table marker", wireDocPath)
	}
	var rows []keyRow
	for i, line := range strings.Split(rest, "\n") {
		if !strings.HasPrefix(line, "|") {
			break
		}
		if i < 2 {
			continue
		}
		cells := strings.Split(strings.ReplaceAll(strings.Trim(line, "|"), `\|`, "\x00"), "|")
		if len(cells) != 6 {
			t.Fatalf("key table row %q has %d cells, want 6", line, len(cells))
		}
		cell := func(i int) string { return strings.Trim(strings.TrimSpace(cells[i]), "`") }
		rows = append(rows, keyRow{pattern: cell(0), typ: cell(1), goExpr: cell(2)})
	}
	if len(rows) == 0 {
		t.Fatalf("%s: the key table has no rows", wireDocPath)
	}
	return doc, rows
}

// keyFuncs and keyConsts are the keys and channels package keys builds
// outside the Queue and Limit methods, by name. A new one must be added
// here and to the table of docs/wire.md (TestWireDocKeys says so).
var (
	keyFuncs = map[string]func(string) string{
		"Worker":     keys.Worker,
		"RateBucket": keys.RateBucket,
	}
	keyConsts = map[string]string{
		"DueIndex":       keys.DueIndex,
		"DueGen":         keys.DueGen,
		"DueWake":        keys.DueWake,
		"Queues":         keys.Queues,
		"RepeatIndex":    keys.RepeatIndex,
		"HousekeepClaim": keys.HousekeepClaim,
		"WorkerIndex":    keys.WorkerIndex,
		"TestKitMarker":  keys.TestKitMarker,
		"TestKitLock":    keys.TestKitLock,
		"ShardRegistry":  keys.ShardRegistry,
	}
)

// notKeys are the exported names of package keys that build no key or
// channel: name rules, ids, prefixes. A name that is in neither this list
// nor the key table fails TestWireDocKeys.
var notKeys = []string{
	"Prefix", "Group", "MaxNameLen", "ErrInvalidName", "ValidateName",
	"MaxPartitionKeyLen", "ValidatePartitionKey", "BadKeyByte", "IsEntryID",
	"Queue", "ForQueue", "BatchKeyPrefix", "BatchOfItem", "TaskID",
	"SplitTaskID", "GroupPrefix", "MaxGroupIDLen", "GroupID", "IsGroupID",
	"SplitGroupID", "Limit", "ForLimit", "PauseNotice", "RatePrefix",
	"LimitPrefix", "ThrottleMatch",
	// Issue 21: shard names and their placement on a cluster's slots.
	"ShardSep", "MaxShards", "MaxPhysicalLen", "ShardName", "ParseShard",
	"IsShard", "ValidatePhysicalQueue", "Slots", "CRC16", "Slot",
	"QueueSlot", "SlotRange", "ErrPlacement", "PlaceShards", "JumpShard", "GrowShards",
}

// docValues are values of notKeys constants that reach Redis as names or
// messages: the document must spell each (in backticks).
var docValues = []string{keys.Prefix, keys.Group, keys.GroupPrefix, keys.BatchKeyPrefix, keys.PauseNotice}

// exportedNames lists the exported names package keys declares:
// functions, types, constants and variables by name, methods as
// "Type.Method".
func exportedNames(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var names []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() {
					continue
				}
				if d.Recv != nil {
					recv := d.Recv.List[0].Type
					if s, ok := recv.(*ast.StarExpr); ok {
						recv = s.X
					}
					names = append(names, recv.(*ast.Ident).Name+"."+d.Name.Name)
				} else {
					names = append(names, d.Name.Name)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							names = append(names, s.Name.Name)
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								names = append(names, n.Name)
							}
						}
					}
				}
			}
		}
	}
	return names
}

var (
	placeholderRE = regexp.MustCompile(`<(\w+)>`)
	// Queue.Task(key), Limit.Holders(), Worker(name) + ":wake", DueIndex
	goExprRE = regexp.MustCompile(`^(?:(Queue|Limit)\.)?(\w+)(?:\(([\w, ]*)\))?(?: \+ "([^"]*)")?$`)
)

// sample is the value a placeholder <name> stands for in these tests.
func sample(name string) string { return "v_" + name }

// fill replaces every placeholder <name> of s by sample(name).
func fill(s string) string {
	return placeholderRE.ReplaceAllStringFunc(s, func(p string) string { return sample(p[1 : len(p)-1]) })
}

// build evaluates a row's Go expression with sample arguments: the key or
// channel package keys builds, and the name the row documents ("Queue.Task",
// "DueIndex").
func build(t *testing.T, expr string) (key, name string) {
	t.Helper()
	m := goExprRE.FindStringSubmatch(expr)
	if m == nil {
		t.Fatalf("key table: Go expression %q is not one this test reads", expr)
	}
	recv, fn, params, suffix := m[1], m[2], m[3], m[4]
	var args []reflect.Value
	if params != "" {
		for _, p := range strings.Split(params, ", ") {
			args = append(args, reflect.ValueOf(sample(p)))
		}
	}
	var f reflect.Value
	switch recv {
	case "Queue":
		name = "Queue." + fn
		f = reflect.ValueOf(keys.ForQueue(sample("queue"))).MethodByName(fn)
	case "Limit":
		name = "Limit." + fn
		f = reflect.ValueOf(keys.ForLimit(sample("scope"))).MethodByName(fn)
	default:
		name = fn
		if c, ok := keyConsts[fn]; ok && !strings.Contains(expr, "(") {
			return c + fill(suffix), name
		}
		if g, ok := keyFuncs[fn]; ok {
			f = reflect.ValueOf(g)
		}
	}
	if !f.IsValid() {
		t.Fatalf("key table: %q: package keys has no such key (or this test's keyFuncs/keyConsts lacks it)", expr)
	}
	if f.Type().NumIn() != len(args) {
		t.Fatalf("key table: %q names %d parameters, %s takes %d", expr, len(args), name, f.Type().NumIn())
	}
	return f.Call(args)[0].String() + fill(suffix), name
}

// TestWireDocKeys: every row of the key table of docs/wire.md is a key or
// channel package keys builds, its pattern spelled as the package builds
// it (each placeholder named as the parameter it stands for); every key
// and channel package keys builds has a row; the values of the names that
// reach Redis are in the document. A key added to package keys without a
// row fails here.
func TestWireDocKeys(t *testing.T) {
	t.Parallel()
	doc, rows := keyTable(t)
	documented := map[string]bool{}
	for _, r := range rows {
		got, name := build(t, r.goExpr)
		if want := fill(r.pattern); got != want {
			t.Errorf("key table: %s builds %q; the pattern %q says %q", r.goExpr, got, r.pattern, want)
		}
		switch r.typ {
		case "string", "hash", "list", "set", "zset", "stream", "channel":
		default:
			t.Errorf("key table: %s: type %q is not a Redis type (or channel)", r.pattern, r.typ)
		}
		documented[name] = true
	}
	// ratelimit's bucket key is the one the table documents.
	if keys.RateBucket("a:b") != ratelimit.BucketKey("a:b") {
		t.Errorf("keys.RateBucket and ratelimit.BucketKey disagree")
	}

	names := exportedNames(t)
	for _, n := range notKeys {
		if !slices.Contains(names, n) {
			t.Errorf("notKeys lists %s, which package keys does not declare", n)
		}
		if documented[n] {
			t.Errorf("%s is in the key table and in notKeys", n)
		}
	}
	for _, n := range names {
		if !documented[n] && !slices.Contains(notKeys, n) {
			t.Errorf("package keys declares %s, which the key table of docs/wire.md does not document (a key: add a row, and for a function or a constant an entry of keyFuncs/keyConsts here; not a key: add it to notKeys)", n)
		}
	}
	for n := range documented {
		if !slices.Contains(names, n) {
			t.Errorf("the key table documents %s, which package keys does not declare", n)
		}
	}
	for _, v := range docValues {
		if !strings.Contains(doc, "`"+v) {
			t.Errorf("docs/wire.md does not spell %q", v)
		}
	}
}

type (
	wdOK     struct{ N int }
	wdFail   struct{}
	wdBlock  struct{ I int }
	wdParent struct{}
)

func (wdOK) Kind() string     { return "wd_ok" }
func (wdFail) Kind() string   { return "wd_fail" }
func (wdBlock) Kind() string  { return "wd_block" }
func (wdParent) Kind() string { return "wd_parent" }

// eachNode runs f on rdb, or on each master of a cluster (at once: f
// guards what it shares).
func eachNode(ctx context.Context, rdb redis.UniversalClient, f func(c redis.Cmdable) error) error {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return f(c) })
	}
	return f(rdb)
}

// patternRE is a key table pattern as a regular expression, each
// placeholder any non-empty text.
func patternRE(pattern string) *regexp.Regexp {
	return regexp.MustCompile("^" + placeholderRE.ReplaceAllString(regexp.QuoteMeta(pattern), ".+") + "$")
}

// TestWireDocKeysLive runs tasks of most shapes (with and without an id,
// delayed, cancelled, failing into the dead-letter store, partitioned,
// under a kind limit and a rate key, a child, a continuation, an InvokeAll
// group, an Outcome waiter) through a client and a worker, and checks every
// key they leave in Redis, and every channel subscribed, against the key
// table of docs/wire.md: each matches a row's pattern, with that row's
// type. It reads Redis twice: while a task runs (a partition and a limit
// busy, a waiter registered) and once all ended.
func TestWireDocKeysLive(t *testing.T) {
	_, rows := keyTable(t)
	env := testenv.Redis(t)
	rdb := env.RDB
	c := testenv.Client(t, env)
	q := testenv.Queue(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	started := make(chan struct{}, 8)
	release := make(chan struct{})
	rateKey := "wd:" + q
	testenv.StartWorker(t, rdb, q, &worker.Config{
		Concurrency: 4,
		Logger:      slog.New(slog.DiscardHandler),
		KindLimits:  map[string]int{"wd_block": 1},
		// One token a minute: the rate key's bucket outlives both reads.
		RateLimits: []worker.RateLimit{{KeyPrefix: "wd:", Limit: ratelimit.Limit{Rate: 1, Per: time.Minute}}},
	}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a wdOK) (int, error) { return 2 * a.N, nil })
		worker.Handle(w, func(ctx context.Context, a wdFail) (int, error) { return 0, errors.New("wd_fail fails") })
		worker.Handle(w, func(ctx context.Context, a wdBlock) (int, error) {
			started <- struct{}{}
			select {
			case <-release:
				return a.I, nil
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		})
		worker.Handle(w, func(ctx context.Context, a wdParent) (int, error) {
			_, err := c.Enqueue(ctx, wdOK{N: 7}, &client.EnqueueOpts{Queue: q})
			return 0, err
		})
	}, true)

	enq := func(args client.Args, o client.EnqueueOpts) *client.Handle {
		t.Helper()
		o.Queue = q
		h, err := c.Enqueue(ctx, args, &o)
		if err != nil {
			t.Fatalf("enqueue %s: %v", args.Kind(), err)
		}
		return h
	}
	var ending []*client.Handle
	ending = append(ending,
		enq(wdOK{N: 1}, client.EnqueueOpts{}),
		enq(wdOK{N: 2}, client.EnqueueOpts{ID: "wd-keyed", Meta: map[string]string{"tenant": "acme"}, RateKey: rateKey}),
		enq(wdFail{}, client.EnqueueOpts{MaxAttempts: 2}),
		enq(wdParent{}, client.EnqueueOpts{}),
	)
	enq(wdOK{N: 3}, client.EnqueueOpts{Delay: time.Hour}) // stays scheduled
	cancelled := enq(wdOK{N: 4}, client.EnqueueOpts{Delay: time.Hour})
	if _, err := cancelled.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	cont, err := ending[1].ContinueWith(ctx, wdOK{N: 5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ending = append(ending, cont)
	g, err := patterns.InvokeAll(ctx, c, []client.Spec{
		{Args: wdOK{N: 6}, Opts: &client.EnqueueOpts{Queue: q}},
		{Args: wdOK{N: 7}, Opts: &client.EnqueueOpts{Queue: q}},
	}, 1, &patterns.GroupOpts{Queue: q})
	if err != nil {
		t.Fatal(err)
	}
	blocked := []*client.Handle{
		enq(wdBlock{I: 1}, client.EnqueueOpts{PartitionKey: "user:42"}),
		enq(wdBlock{I: 2}, client.EnqueueOpts{PartitionKey: "user:42"}),
		enq(wdBlock{I: 3}, client.EnqueueOpts{}),
	}
	ending = append(ending, blocked...)

	// An Outcome waiter on the last blocked task, registered before the
	// first read.
	waited := make(chan error, 1)
	go func() {
		_, err := blocked[2].Outcome(ctx)
		waited <- err
	}()
	hooks := keys.ForQueue(q).Hooks()
	// The hooks also hold the continuation registered above ("c:..."), which
	// leaves them once its parent ends: wait for the waiter's own member.
	testenv.Eventually(t, 10*time.Second, "the Outcome waiter's registration", func() bool {
		ms, _ := rdb.ZRange(ctx, hooks, 0, -1).Result()
		return slices.ContainsFunc(ms, func(m string) bool { return strings.HasPrefix(m, "w:") })
	})
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("no wd_block task started")
	}

	seen := map[string]bool{}
	check := func(when string) {
		t.Helper()
		match := []string{"*"}
		if env.Mini == nil {
			// A shared server: this test's keys, and the fleet-wide ones.
			match = []string{"async:{q:" + q + "}*", "async:{coord}*", "async:{lim:kind:wd_block}*", "async:{rl:" + rateKey + "}*"}
		}
		var mu sync.Mutex
		var found []string
		err := eachNode(ctx, rdb, func(n redis.Cmdable) error {
			for _, m := range match {
				it := n.Scan(ctx, 0, m, 1000).Iterator()
				for it.Next(ctx) {
					mu.Lock()
					found = append(found, it.Val())
					mu.Unlock()
				}
				if err := it.Err(); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range found {
			typ, err := rdb.Type(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			if typ == "none" {
				continue // expired or deleted since the scan
			}
			seen[matchRow(t, rows, when, k, typ)] = true
		}
		var chans []string
		err = eachNode(ctx, rdb, func(n redis.Cmdable) error {
			cs, err := n.PubSubChannels(ctx, "async:*").Result()
			mu.Lock()
			chans = append(chans, cs...)
			mu.Unlock()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range chans {
			seen[matchRow(t, rows, when, ch, "channel")] = true
		}
	}
	check("while tasks run")

	close(release)
	for _, h := range ending {
		if _, err := h.Outcome(ctx); err != nil && h != ending[2] {
			t.Fatalf("task %s: %v", h.ID(), err)
		}
	}
	if err := <-waited; err != nil {
		t.Fatalf("Outcome of %s: %v", blocked[2].ID(), err)
	}
	if _, err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	check("once they ended")

	// The test reached what a task touches.
	for _, want := range []string{
		"Queue.Stream", "Queue.Task", "Queue.Result", "Queue.Op", "Queue.Scheduled", "Queue.Dead",
		"Queue.Stats", "Queue.StatsHistory", "Queue.Hooks", "Queue.Kids", "Queue.Partition",
		"Queue.Group", "Queue.Groups", "Queue.Done", "Queue.Ctl",
		"Limit.Holders", "RateBucket", "Queues",
	} {
		if !seen[want] {
			t.Errorf("no key of %s seen (seen: %v)", want, slices.Sorted(maps.Keys(seen)))
		}
	}
}

// matchRow returns the name of the row of the key table whose pattern
// matches key (a channel, for typ "channel") with type typ; it fails t when
// there is none.
func matchRow(t *testing.T, rows []keyRow, when, key, typ string) string {
	t.Helper()
	var other []string
	for _, r := range rows {
		if !patternRE(r.pattern).MatchString(key) {
			continue
		}
		_, name := build(t, r.goExpr)
		if r.typ == typ {
			return name
		}
		other = append(other, r.pattern+" ("+r.typ+")")
	}
	if len(other) > 0 {
		t.Errorf("%s: %s %q is a %s; the key table has %v", when, "key", key, typ, other)
	} else {
		t.Errorf("%s: %s %q (%s) matches no pattern of the key table of docs/wire.md", when, "key", key, typ)
	}
	return ""
}
