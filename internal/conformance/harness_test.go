// Package conformance is the resend conformance suite: every public
// operation that writes, run once cleanly and then again with the reply of
// each of its writing Redis calls dropped once and twice (go-redis resends
// the call), must leave the same end state and give its caller the same
// answer. It has tests only.
//
// The runs of a table share one Redis (testenv.IsolatedRedis: a
// miniredis, or this package's database of a real server, flushed), and go
// in parallel, each on a lane of its own while it runs (a proxy and a
// client through it). Each run has names of its own (queues, schedule,
// limiter key, all carrying the run's suffix), and its state is what
// carries its suffix. Tables run one at a time (each flushes the
// database). On the cluster pass the Redis is a miniredis:
// go-redis' ClusterClient follows the node addresses CLUSTER SLOTS gives
// and would go round the proxy, which serves one address.
package conformance

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"strconv"
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

// isolatedDB is this package's database for testenv.IsolatedRedis.
const isolatedDB = 11

// Row is one operation of the table.
type Row struct {
	Name string
	// Setup prepares what the operation acts on, through the proxy with no
	// fault (its calls are not enumerated). May be nil.
	Setup func(r *Run)
	// Op runs the operation on r.C (or on r.RDB, through the proxy) and
	// returns its answer as text: what the caller saw. It may start a
	// worker (Run.StartWorker) or a coordinator on r.RDB and wait for it to
	// process; it must stop what it started before it returns, as the end
	// state is read then.
	Op func(r *Run) string
	// Serial runs the row's runs one at a time: for a row that starts a
	// coordinator, which serves every queue of its Redis (the runs of a
	// table share one; rows go one at a time).
	Serial bool
	// Normalize, when set, rewrites the normalized state of every run of
	// the row: for what the row cannot make deterministic (say so there).
	Normalize func(state string) string
	// Calls, when set, limits the faulted calls to those whose name it
	// accepts (e.g. a worker row faulting only "EVALSHA complete"); a name
	// is testenv.Command.String() normalized (Run.callName: the run's
	// names and random ids replaced, as in the subtests' names). By
	// default every writing call is faulted.
	Calls func(call string) bool
}

// Run is one run of a row: names of its own, and a lane (a proxy and a
// client through it) to itself while it runs.
type Run struct {
	T      *testing.T
	Ctx    context.Context
	Env    *testenv.Env
	Proxy  *testenv.FaultProxy
	RDB    *redis.Client  // through the proxy: resends up to 3 times
	C      *client.Client // on RDB
	Direct *client.Client // for probes and set-ups: C, read once the rules are cleared
	Q, Q2  string         // queue names unique to the run
	U      string         // the run's suffix, in every name it makes

	dropped0 int

	// What Setup leaves for Op.
	H []*client.Handle
	G []*patterns.Group
	S *patterns.Schedule

	// What the run holds for the end-state probe: the operation's handles,
	// groups, limiter keys and partitioners (see Track*).
	handles   []*client.Handle
	groups    []*patterns.Group
	limits    []limitProbe
	lens      []func() (int64, error)
	statePart []string
}

type limitProbe struct {
	lim ratelimit.Limit
	key string
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// lane is a proxy in front of the table's Redis and a client through it,
// used by one run at a time: a client loads every script when it is made,
// which costs more than most runs.
type lane struct {
	env   *testenv.Env
	proxy *testenv.FaultProxy
	rdb   *redis.Client
	c     *client.Client
}

func newLane(t *testing.T, env *testenv.Env) *lane {
	t.Helper()
	p := testenv.NewFaultProxy(t, env.Addr)
	rdb := p.NewClient(t, env)
	// client.New loads every script into the server's cache, so that a
	// run's calls are EVALSHA on every backend (not EVALSHA, NOSCRIPT, EVAL
	// on a fresh one).
	c, err := client.New(context.Background(), rdb, &client.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &lane{env: env, proxy: p, rdb: rdb, c: c}
}

// newRun starts a run on l, with names of its own.
func newRun(t *testing.T, l *lane) *Run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	l.proxy.ClearRules()
	l.proxy.ResetCommands()
	var b [4]byte
	_, _ = crand.Read(b[:])
	u := "u" + hex.EncodeToString(b[:])
	// Probes go through the proxy too, once its rules are cleared.
	r := &Run{T: t, Ctx: ctx, Env: l.env, Proxy: l.proxy, RDB: l.rdb, C: l.c, Direct: l.c,
		Q: "confq-a-" + u, Q2: "confq-b-" + u, U: u, dropped0: l.proxy.Dropped()}
	t.Cleanup(r.removeKeys)
	return r
}

// removeKeys deletes what the run wrote once it is over (after what it
// started stopped), so that the table's Redis stays small: every run scans
// it for its own keys.
func (r *Run) removeKeys() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rdb := r.Env.RDB
	for _, pat := range []string{"*" + r.U + "*", "async:{coord}:*"} {
		iter := rdb.Scan(ctx, 0, pat, 1000).Iterator()
		for iter.Next(ctx) {
			k := iter.Val()
			if strings.Contains(k, r.U) {
				_ = rdb.Del(ctx, k).Err()
				continue
			}
			// A key every queue shares: the run's entries only.
			switch rdb.Type(ctx, k).Val() {
			case "hash":
				for _, f := range rdb.HKeys(ctx, k).Val() {
					if strings.Contains(f, r.U) {
						_ = rdb.HDel(ctx, k, f).Err()
					}
				}
			case "set":
				for _, m := range rdb.SMembers(ctx, k).Val() {
					if strings.Contains(m, r.U) {
						_ = rdb.SRem(ctx, k, m).Err()
					}
				}
			case "zset":
				for _, m := range rdb.ZRange(ctx, k, 0, -1).Val() {
					if strings.Contains(m, r.U) {
						_ = rdb.ZRem(ctx, k, m).Err()
					}
				}
			}
		}
	}
}

// StartWorker starts a worker on r.RDB (through the proxy) serving r.Q and
// r.Q2, with register adding its handlers, and returns its Stop (also
// called, if it was not, when the run ends).
func (r *Run) StartWorker(cfg *worker.Config, register func(w *worker.Worker)) (stop func()) {
	r.T.Helper()
	if cfg == nil {
		cfg = &worker.Config{}
	}
	if cfg.Queues == nil {
		cfg.Queues = map[string]int{r.Q: 1, r.Q2: 1}
	}
	if cfg.BlockTimeout == 0 {
		cfg.BlockTimeout = 50 * time.Millisecond
	}
	if cfg.Backoff == nil {
		cfg.Backoff = func(int) time.Duration { return 5 * time.Millisecond }
	}
	w, err := worker.New(context.Background(), r.RDB, cfg)
	r.Must(err)
	register(w)
	r.Must(w.Start(r.Ctx))
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := w.Stop(ctx); err != nil {
				r.T.Errorf("stop the worker: %v", err)
			}
		})
	}
	r.T.Cleanup(stop)
	return stop
}

// Dropped is the number of replies dropped in this run.
func (r *Run) Dropped() int { return r.Proxy.Dropped() - r.dropped0 }

// Track adds handles to the end-state probe: their ids, states and attempts.
func (r *Run) Track(hs ...*client.Handle) { r.handles = append(r.handles, hs...) }

// TrackGroup adds a group to the probe: its progress and its members' states.
func (r *Run) TrackGroup(g *patterns.Group) { r.groups = append(r.groups, g) }

// TrackLimit adds a limiter key to the probe: the events its bucket admits
// now (taken at the end of the probe, on the Redis itself).
func (r *Run) TrackLimit(lim ratelimit.Limit, key string) {
	r.limits = append(r.limits, limitProbe{lim, key})
}

// Note adds a line to the end state (a row's own public probe).
func (r *Run) Note(format string, args ...any) {
	r.statePart = append(r.statePart, fmt.Sprintf(format, args...))
}

// TrackLen adds a length (a partitioner's) to the probe.
func (r *Run) TrackLen(f func() (int64, error)) { r.lens = append(r.lens, f) }

// Must fails the run on err.
func (r *Run) Must(err error) {
	r.T.Helper()
	if err != nil {
		r.T.Fatal(err)
	}
}

// Answer formats an operation's result and error for Row.Op.
func Answer(v any, err error) string {
	if err != nil {
		return fmt.Sprintf("%v error: %v", v, err)
	}
	return fmt.Sprint(v)
}

// HandleText is a handle as a caller sees it.
func HandleText(h *client.Handle) string {
	if h == nil {
		return "<nil handle>"
	}
	return fmt.Sprintf("%s dup=%v", h.ID(), h.Duplicate())
}

// State is the normalized end state: the answer, the public probes, and a
// dump of every key (name, type, size, TTL or not, and members, fields and
// entries that are printable text), sorted.
func (r *Run) State(answer string) string {
	r.T.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "answer: %s\n", answer)
	for _, h := range r.handles {
		if h == nil {
			fmt.Fprintf(&b, "task: nil handle\n")
			continue
		}
		dh, err := r.Direct.Task(h.ID())
		r.Must(err)
		info, err := dh.Info(r.Ctx)
		if err != nil {
			fmt.Fprintf(&b, "task %s: %v\n", h.ID(), err)
			continue
		}
		fmt.Fprintf(&b, "task %s: %s attempt %d/%d\n", h.ID(), info.State, info.Attempt, info.MaxAttempts)
	}
	for _, g := range r.groups {
		if g == nil {
			fmt.Fprintf(&b, "group: nil\n")
			continue
		}
		g, err := patterns.Open(r.Direct, g.ID())
		r.Must(err)
		pg, err := g.Progress(r.Ctx)
		fmt.Fprintf(&b, "group %s: %+v %v\n", g.ID(), pg, err)
		ms, err := g.Members(r.Ctx)
		if err != nil {
			fmt.Fprintf(&b, "  members: %v\n", err)
		}
		for _, m := range ms {
			if m == nil {
				fmt.Fprintf(&b, "  member: nested group\n")
				continue
			}
			st, err := m.State(r.Ctx)
			fmt.Fprintf(&b, "  member %s: %s %v\n", m.ID(), st, err)
		}
	}
	for _, q := range []string{r.Q, r.Q2} {
		dead, err := r.Direct.DeadTasks(r.Ctx, q, 0, 100)
		r.Must(err)
		for _, d := range dead {
			fmt.Fprintf(&b, "dead %s: %s attempt %d\n", d.ID, d.Error, d.Attempt)
		}
	}
	reps, err := patterns.Repeats(r.Ctx, r.Direct)
	r.Must(err)
	for _, s := range reps {
		if !strings.Contains(s.Name, r.U) {
			continue // another run's
		}
		fmt.Fprintf(&b, "repeat %s: queue %s kind %s every %v cron %q last %q fired %d\n", s.Name, s.Queue, s.Kind, s.Every, s.Cron, s.Last, s.Fired)
	}
	for i, f := range r.lens {
		n, err := f()
		fmt.Fprintf(&b, "len %d: %d %v\n", i, n, err)
	}
	// Whether the operation woke the coordinators (a wake lost to a resend
	// leaves a due task waiting for their next look, up to MaxSleep).
	woke := false
	for _, c := range r.Proxy.Commands() {
		if c.Name == "PUBLISH" && c.Arg(0) == keys.DueWake {
			woke = true
		}
	}
	fmt.Fprintf(&b, "coordinators woken: %v\n", woke)
	for _, part := range r.statePart {
		b.WriteString(part + "\n")
	}
	b.WriteString(r.dump())
	// Last, as it takes tokens.
	for _, l := range r.limits {
		lim := ratelimit.New(r.Env.RDB, l.lim)
		n := 0
		for ; n <= l.lim.Burst+l.lim.Rate; n++ {
			res, err := lim.Allow(r.Ctx, l.key, 1)
			r.Must(err)
			if !res.Allowed {
				break
			}
		}
		fmt.Fprintf(&b, "limit %s admits %d now\n", l.key, n)
	}
	return r.normalize(b.String())
}

// dump lists every key of the run's Redis.
func (r *Run) dump() string {
	rdb := r.Env.RDB
	ctx := r.Ctx
	var ks []string
	for _, pat := range []string{"*" + r.U + "*", "async:{coord}:*"} {
		iter := rdb.Scan(ctx, 0, pat, 1000).Iterator()
		for iter.Next(ctx) {
			ks = append(ks, iter.Val())
		}
		r.Must(iter.Err())
	}
	var lines []string
	for _, k := range ks {
		if strings.Contains(k, ":op:") {
			// Replay markers: they exist to make a resend answer as the
			// first run did (which the rest of the state and the answer
			// show), and a read reply cuts them to a 2 s grace, so
			// whether one is still there depends on how long a run took.
			continue
		}
		typ, err := rdb.Type(ctx, k).Result()
		r.Must(err)
		ttl, err := rdb.PTTL(ctx, k).Result()
		r.Must(err)
		line := k + " " + typ
		if ttl > 0 {
			line += " ttl"
		}
		var elems []string
		switch typ {
		case "string":
		case "hash":
			m, err := rdb.HGetAll(ctx, k).Result()
			r.Must(err)
			if strings.HasSuffix(k, ":hist") {
				// A queue's recent counts: fields named by the second
				// and the minute they fell in. Their sums are what a
				// resend must not change.
				elems = histSums(m)
				break
			}
			for f, v := range m {
				if k == keys.DueGen {
					// The due index's generations count marks: a
					// coordinator only compares one with what it read
					// before, so a mark counted twice (a resent
					// duemark.lua) changes nothing it does.
					v = "<gen>"
				}
				elems = append(elems, r.text(f)+"="+r.text(v))
			}
			sort.Strings(elems)
		case "list":
			l, err := rdb.LRange(ctx, k, 0, -1).Result()
			r.Must(err)
			for _, v := range l {
				elems = append(elems, r.text(v))
			}
		case "set":
			l, err := rdb.SMembers(ctx, k).Result()
			r.Must(err)
			for _, v := range l {
				elems = append(elems, r.text(v))
			}
			sort.Strings(elems)
		case "zset":
			l, err := rdb.ZRange(ctx, k, 0, -1).Result()
			r.Must(err)
			for _, v := range l {
				elems = append(elems, r.text(v))
			}
			sort.Strings(elems) // scores are times; members in order of them may tie
		case "stream":
			xs, err := rdb.XRange(ctx, k, "-", "+").Result()
			r.Must(err)
			for _, x := range xs {
				var fs []string
				for f, v := range x.Values {
					fs = append(fs, r.text(f)+"="+r.text(fmt.Sprint(v)))
				}
				sort.Strings(fs)
				elems = append(elems, "{"+strings.Join(fs, " ")+"}")
			}
			gs, err := rdb.XInfoGroups(ctx, k).Result()
			if err == nil {
				for _, g := range gs {
					elems = append(elems, fmt.Sprintf("group %s consumers %d pending %d", g.Name, g.Consumers, g.Pending))
				}
			}
		}
		if !strings.Contains(k, r.U) {
			// A key shared by every queue (the coordinators' index):
			// only the run's entries.
			mine := elems[:0]
			for _, e := range elems {
				if strings.Contains(e, r.U) {
					mine = append(mine, e)
				}
			}
			if elems = mine; len(elems) == 0 {
				continue
			}
		}
		lines = append(lines, r.normalize(line+" "+strconv.Itoa(len(elems))+" ["+strings.Join(elems, " ")+"]"))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

// histSums sums the counts of a queue's history hash (keys.Queue.StatsHistory)
// by ring: "s" (seconds) and "m" (minutes), each "<ended>:<failed>".
func histSums(m map[string]string) []string {
	var out []string
	for _, ring := range []string{"m", "s"} {
		var n, f int
		for k, v := range m {
			if !strings.HasPrefix(k, ring) {
				continue
			}
			var stamp, a, b int
			if _, err := fmt.Sscanf(v, "%d:%d:%d", &stamp, &a, &b); err == nil {
				n, f = n+a, f+b
			}
		}
		out = append(out, fmt.Sprintf("%s=%d:%d", ring, n, f))
	}
	return out
}

// text is v normalized when that is short printable text, else a
// placeholder: encoded envelopes and results hold random ids and times, and
// differ run to run in length too.
func (r *Run) text(v string) string {
	v = r.normalize(v)
	if len(v) > 64 {
		return "<blob>"
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return "<blob>"
		}
	}
	return v
}

var (
	consumer = regexp.MustCompile(regexp.QuoteMeta(hostname()) + `-\d+-\d+`)
	// Random tokens that may be letters only: a group's nonce (in its
	// members' ids too), a schedule's token.
	tokens = []struct {
		re  *regexp.Regexp
		new string
	}{
		{regexp.MustCompile(`\bnc=(<r>|[0-9a-z]{6}\b)`), "nc=<nc>"},
		{regexp.MustCompile(`\.[0-9a-z]{6}\.`), ".<nc>."},
		{regexp.MustCompile(`\btok=(<r>|[0-9a-z]+)`), "tok=<tok>"},
		{regexp.MustCompile(`\|[0-9a-z]{8,}\b`), "|<tok>"},
		{regexp.MustCompile(`[0-9a-z]{8,}\.[0-9a-z]{8,}`), "<op>"}, // operation ids
		// The member a group records as its first to fail: of members
		// cancelled together, whichever came first.
		{regexp.MustCompile(`\bfirst=[^ \]]*`), "first=<member>"},
	}
	// Random ids otherwise: a word of 5 or more lower-case letters and
	// digits with both in it.
	word = regexp.MustCompile(`\b[0-9a-z]{5,}\b`)
	// Then what is made of digits.
	numbers = []struct {
		re  *regexp.Regexp
		new string
	}{
		{regexp.MustCompile(`\d{10,}-\d+`), "<eid>"}, // stream entry ids
		{regexp.MustCompile(`\d{10,}`), "<n>"},       // times in ms
	}
)

func hostname() string {
	h, _ := os.Hostname()
	if h == "" {
		return "localhost"
	}
	return h
}

// normalize replaces what differs from run to run by placeholders: entry
// ids, times, random ids and consumer names.
func (r *Run) normalize(s string) string {
	s = strings.ReplaceAll(s, r.Q2, "Q2")
	s = strings.ReplaceAll(s, r.Q, "Q")
	s = strings.ReplaceAll(s, r.U, "U")
	s = consumer.ReplaceAllString(s, "<consumer>")
	for _, n := range tokens {
		s = n.re.ReplaceAllString(s, n.new)
	}
	s = word.ReplaceAllStringFunc(s, func(w string) string {
		if strings.ContainsAny(w, "0123456789") && strings.ContainsAny(w, "abcdefghijklmnopqrstuvwxyz") {
			return "<r>"
		}
		return w
	})
	for _, n := range numbers {
		s = n.re.ReplaceAllString(s, n.new)
	}
	return s
}

// call is a writing call of a clean run: its name and its occurrence (from
// 1).
type call struct {
	name string
	nth  int
}

// writingCalls returns the writing calls among cmds, in order.
func (r *Run) writingCalls(cmds []testenv.Command, accept func(string) bool) []call {
	seen := map[string]int{}
	var out []call
	for _, c := range cmds {
		if testenv.IsSetup(c) || !testenv.IsWrite(c) {
			continue
		}
		name := r.callName(c)
		if accept != nil && !accept(name) {
			continue
		}
		seen[name]++
		out = append(out, call{name, seen[name]})
	}
	return out
}

// callName is c normalized: the same call has the same name in every run.
func (r *Run) callName(c testenv.Command) string { return r.normalize(c.String()) }

// maxNth bounds the occurrences of one call that are faulted: the first
// few and the last.
const maxNth = 3

// once are calls whose effect does not depend on the operation (a queue's
// registration, its consumer group, a wake-up): a table faults each in the
// first row that makes it.
var once = map[string]bool{
	"XGROUP create":              true,
	"SADD async:{coord}:queues":  true,
	"PUBLISH async:{coord}:wake": true,
}

// parallel is how many runs go at once: a run waits on round trips more
// than it computes.
const parallel = 6

// RunTable runs every row: cleanly twice (the two states must be equal, or
// the row or the normalization is unsound), then once per writing call of
// the clean run and drop count (1 and 2), each state compared with the
// clean one.
func RunTable(t *testing.T, rows []Row) {
	env := testenv.IsolatedRedis(t, isolatedDB)
	lanes := make(chan *lane, parallel)
	for range parallel {
		lanes <- newLane(t, env)
	}
	// inLane runs f as subtest name on a free lane.
	inLane := func(t *testing.T, name string, f func(t *testing.T, r *Run)) {
		l := <-lanes
		defer func() { lanes <- l }()
		t.Run(name, func(t *testing.T) { f(t, newRun(t, l)) })
	}
	faulted := map[string]bool{}
	for _, row := range rows {
		t.Run(row.Name, func(t *testing.T) {
			var clean, again string
			var calls []call
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				inLane(t, "clean", func(t *testing.T, r *Run) {
					if row.Setup != nil {
						row.Setup(r)
					}
					r.Proxy.ResetCommands()
					ans := row.Op(r)
					calls = r.writingCalls(r.Proxy.Commands(), row.Calls)
					clean = row.state(r, ans)
				})
			}()
			go func() {
				defer wg.Done()
				inLane(t, "clean-again", func(t *testing.T, r *Run) {
					if row.Setup != nil {
						row.Setup(r)
					}
					r.Proxy.ResetCommands()
					again = row.state(r, row.Op(r))
				})
			}()
			wg.Wait()
			if t.Failed() {
				return
			}
			if again != clean {
				t.Fatalf("two clean runs differ:\n%s", diff(clean, again))
			}
			if len(calls) == 0 {
				t.Fatal("the operation made no writing call")
			}
			last := map[string]int{}
			for _, c := range calls {
				last[c.name] = c.nth
			}
			type fault struct {
				call
				times int
			}
			var faults []fault
			for _, c := range calls {
				if c.nth > maxNth && c.nth != last[c.name] {
					continue
				}
				if once[c.name] {
					if faulted[c.name] {
						continue
					}
					faulted[c.name] = true
				}
				faults = append(faults, fault{c, 1}, fault{c, 2})
			}
			next := make(chan fault)
			n := parallel
			if row.Serial {
				n = 1
			}
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for f := range next {
						inLane(t, fmt.Sprintf("%s#%d/x%d", f.name, f.nth, f.times), func(t *testing.T, r *Run) {
							if row.Setup != nil {
								row.Setup(r)
							}
							r.Proxy.ResetCommands()
							r.Proxy.DropReply(func(cmd testenv.Command) bool { return r.callName(cmd) == f.name }, f.nth, f.times)
							ans := row.Op(r)
							if n := r.Dropped(); n != f.times {
								t.Errorf("%d replies dropped, want %d: the call was not made as in the clean run, or go-redis did not resend it (answer: %s)", n, f.times, r.normalize(ans))
							}
							r.Proxy.ClearRules()
							if got := row.state(r, ans); got != clean {
								t.Errorf("end state differs from the clean run's (- clean, + faulted):\n%s", diff(clean, got))
							}
						})
					}
				}()
			}
			for _, f := range faults {
				next <- f
			}
			close(next)
			wg.Wait()
		})
	}
}

// state is r.State, normalized for the row.
func (row Row) state(r *Run, answer string) string {
	s := r.State(answer)
	if row.Normalize != nil {
		s = row.Normalize(s)
	}
	return s
}

// diff lists the lines only in a and only in b.
func diff(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if count[l] > 0 {
			out = append(out, "- "+l)
			count[l]--
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if count[l] < 0 {
			out = append(out, "+ "+l)
			count[l]++
		}
	}
	return strings.Join(out, "\n")
}
