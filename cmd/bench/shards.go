package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/worker"
)

// The shards phase (issue 21): a sharded queue on a local Redis Cluster the
// bench starts for it. Tasks flow through a queue declared with N shards,
// in turn with the same tasks through one plain queue on the same cluster
// (the same-run baseline); each master's share of the tasks, of the keys
// and of Redis CPU is taken from INFO on every master. A second part
// checks per-key order across shards with partition keys.

// shardCfg is the workload of the shards phase.
type shardCfg struct {
	Masters    int           // masters of the cluster (no replicas)
	Shards     int           // shards of the queue
	Tasks      int           // tasks a run
	Producers  int           // goroutines calling EnqueueMany, sharing one client
	Batch      int           // tasks an EnqueueMany call
	Backlog    int           // producers wait while more tasks than this are enqueued and not handled
	Workers    int           // workers in this process, each with its own cluster client
	Conc       int           // each worker's Concurrency
	FetchBatch int           // each worker's FetchBatch
	OrderKeys  int           // partition keys of the order check
	OrderPer   int           // tasks a key
	Idle       time.Duration // how long the idle workers are watched
	Reps       int
}

// idleRun is what idle workers (default settings) cost the cluster.
type idleRun struct {
	Sharded        bool
	Physical       int // physical queues each worker serves
	Workers        int // idle workers
	Dur            time.Duration
	ReadsPerWorker float64            // XREADGROUP calls a second, a worker
	CPUPerWorker   float64            // Redis CPU µs a second, a worker, all masters, the cluster's own idle CPU taken out
	ClusterIdleCPU float64            // Redis CPU µs a second of the masters without workers
	CmdsPerWorker  float64            // commands a second, a worker, all masters
	ReadsByMaster  []float64          // XREADGROUP calls a second on each master, all workers
	ByCmd          map[string]float64 // commands a second, a worker, by name
}

// topCmds lists the commands of m, most first, down to 1 a second.
func topCmds(m map[string]float64) string {
	type kv struct {
		k string
		v float64
	}
	var l []kv
	for k, v := range m {
		if v >= 0.95 {
			l = append(l, kv{k, v})
		}
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v })
	var out []string
	for _, x := range l {
		out = append(out, fmt.Sprintf("%s %.1f", strings.ToUpper(x.k), x.v))
	}
	return strings.Join(out, ", ")
}

// shardIdle starts cfg.Workers workers with default settings on an empty
// queue (declared with cfg.Shards shards when sharded), lets them settle
// for two seconds, and counts their reads and Redis CPU over cfg.Idle.
func (e *env) shardIdle(ctx context.Context, cl *cluster, cfg shardCfg, sharded bool) (*idleRun, error) {
	if err := cl.flush(ctx); err != nil {
		return nil, err
	}
	admins := make([]*redis.Client, len(cl.masters))
	for i, m := range cl.masters {
		admins[i] = redis.NewClient(&redis.Options{Addr: m.addr})
		defer admins[i].Close()
	}
	rdb := clusterClient(cl, 0)
	defer rdb.Close()
	q := "bench-idle"
	ir := &idleRun{Sharded: sharded, Physical: 1, Workers: cfg.Workers, Dur: cfg.Idle, ByCmd: map[string]float64{}}
	if sharded {
		c, err := client.New(ctx, rdb, &client.Config{Logger: e.logger})
		if err != nil {
			return nil, err
		}
		_, err = c.DeclareShards(ctx, q, cfg.Shards)
		_ = c.Close()
		if err != nil {
			return nil, err
		}
		ir.Physical = 1 + cfg.Shards
	}
	// The cluster's own idle cost (server and cluster crons, gossip)
	// over the same span, without workers, is taken out.
	base0, err := takeMasterSnap(ctx, admins)
	if err != nil {
		return nil, err
	}
	time.Sleep(cfg.Idle)
	base1, err := takeMasterSnap(ctx, admins)
	if err != nil {
		return nil, err
	}
	baseSecs := base1.s[0].at.Sub(base0.s[0].at).Seconds()
	baseCPU := 0.0
	for i := range cl.masters {
		baseCPU += base1.s[i].redisCPU - base0.s[i].redisCPU
	}
	ir.ClusterIdleCPU = baseCPU * 1e6 / baseSecs

	var ws []*worker.Worker
	var wrdbs []*redis.ClusterClient
	defer func() {
		for _, w := range ws {
			e.stopWorker(w)
		}
		for _, r := range wrdbs {
			_ = r.Close()
		}
	}()
	for i := 0; i < cfg.Workers; i++ {
		wrdb := clusterClient(cl, 0)
		wrdbs = append(wrdbs, wrdb)
		w, err := worker.New(ctx, wrdb, &worker.Config{Queues: map[string]int{q: 1}, Logger: e.logger})
		if err != nil {
			return nil, err
		}
		worker.Handle(w, func(ctx context.Context, a noop) (struct{}, error) { return struct{}{}, nil })
		if err := w.Start(ctx); err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	time.Sleep(2 * time.Second) // registrations, consumer groups, the first reads
	before, err := takeMasterSnap(ctx, admins)
	if err != nil {
		return nil, err
	}
	time.Sleep(cfg.Idle)
	after, err := takeMasterSnap(ctx, admins)
	if err != nil {
		return nil, err
	}
	secs := after.s[0].at.Sub(before.s[0].at).Seconds()
	var reads, cmds, cpu float64
	for i := range cl.masters {
		b, a := before.s[i], after.s[i]
		r := float64(a.calls["xreadgroup"] - b.calls["xreadgroup"])
		ir.ReadsByMaster = append(ir.ReadsByMaster, r/secs)
		reads += r
		cpu += a.redisCPU - b.redisCPU
		for cmd, n := range a.calls {
			if cmd != "info" && cmd != "dbsize" {
				cmds += float64(n - b.calls[cmd])
				ir.ByCmd[cmd] += float64(n-b.calls[cmd]) / secs / float64(cfg.Workers)
			}
		}
	}
	w := float64(cfg.Workers)
	ir.ReadsPerWorker, ir.CmdsPerWorker = reads/secs/w, cmds/secs/w
	ir.CPUPerWorker = max(cpu*1e6/secs-ir.ClusterIdleCPU, 0) / w
	return ir, nil
}

// shardMasterFig is one master's figures over one run.
type shardMasterFig struct {
	Addr    string
	Shards  int     // the queue's shards it serves (the plain queue's slot not counted)
	Tasks   int64   // tasks that ran on its shards (their queues' succeeded counts)
	Keys    int64   // DBSIZE after the run minus before
	CPU     float64 // seconds of Redis CPU (used_cpu_sys + used_cpu_user)
	Cmds    int64   // commands (commandstats calls, INFO excluded)
	Reads   int64   // XREADGROUP calls
	Evalsha int64
}

// shardRun is one run of tasks through the sharded queue or the plain one.
type shardRun struct {
	Sharded  bool
	Tasks    int
	Dur      time.Duration
	Rate     float64 // tasks/s, end to end
	Masters  []shardMasterFig
	GoCores  float64 // this process (producers and workers)
	Other    float64 // cores other processes kept busy
	RedisCPU float64 // seconds, every node
}

func (r *shardRun) redisCores() float64 { return r.RedisCPU / r.Dur.Seconds() }

// share returns each master's share of f (a field of its figures) and the
// largest deviation from even, relative to even (0.15 is ±15 %).
func (r *shardRun) share(f func(shardMasterFig) float64) (shares []float64, worst float64) {
	total := 0.0
	for _, m := range r.Masters {
		total += f(m)
	}
	even := 1 / float64(len(r.Masters))
	for _, m := range r.Masters {
		s := 0.0
		if total > 0 {
			s = f(m) / total
		}
		shares = append(shares, s)
		worst = max(worst, abs(s-even)/even)
	}
	return shares, worst
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// orderInfo is the per-key order check.
type orderInfo struct {
	Keys, Per     int
	Tasks         int
	Dur           time.Duration
	KeysPerShard  []int // keys whose tasks went to each shard
	TasksPerShard []int64
	OutOfOrder    int      // handler runs whose sequence number was not the key's next
	Overlaps      int      // handler starts while a task of the same key ran
	Incomplete    int      // keys that did not see every sequence number once
	TwoShards     int      // runs on another shard than the key's earlier ones
	Misplaced     int      // keys not on the shard the placement rule gives
	Examples      []string // a few of the faults, for the report
}

// shardsInfo is the shards section of the report.
type shardsInfo struct {
	Cfg      shardCfg
	Names    []string // the shards' physical queues
	Slots    []int    // each shard's hash slot
	OnMaster []int    // each shard's master (index into the run's Masters)
	Addrs    []string
	PlainOn  int // the master of the plain queue's slot
	RegOn    int // the master of the shard registry's slot
	CoordOn  int // the master of the coordinators' slot
	Started  time.Duration
	Sharded  []*shardRun
	Plain    []*shardRun
	Idle     []*idleRun // sharded, then plain
	Order    *orderInfo
	Wait     *waitInfo
	Errs     []string
	WaitOnly bool // only the durable enqueue part ran (--only durable)
}

// shardsRun starts a cluster of cfg.Masters masters, runs the sharded and
// plain flows in turn cfg.Reps times, then the order check, and stops the
// cluster.
func (e *env) shardsRun(ctx context.Context, cfg shardCfg, hold func(*cluster)) (*shardsInfo, error) {
	info := &shardsInfo{Cfg: cfg}
	t0 := time.Now()
	say := func(s string) { fmt.Fprintf(e.progress, "  %s\n", s) }
	cl, err := startCluster(ctx, cfg.Masters, 0, say)
	if err != nil {
		return nil, err
	}
	hold(cl)
	defer func() {
		cl.stop()
		hold(nil)
	}()
	info.Started = time.Since(t0)
	say(fmt.Sprintf("cluster ready in %v: pids %v", info.Started.Round(time.Millisecond), cl.pids()))
	for _, m := range cl.masters {
		info.Addrs = append(info.Addrs, m.addr)
	}

	for i := 0; i < cfg.Reps; i++ {
		for _, sharded := range []bool{true, false} {
			if i%2 == 1 {
				sharded = !sharded // swap the order every round
			}
			what := "plain queue"
			if sharded {
				what = fmt.Sprintf("%d-shard queue", cfg.Shards)
			}
			fmt.Fprintf(e.progress, "%s  %s tasks through a %s (run %d of %d)\n", time.Now().Format("15:04:05"), thousands(float64(cfg.Tasks)), what, i+1, cfg.Reps)
			r, err := e.shardFlow(ctx, cl, cfg, sharded, info)
			if err != nil {
				return info, err
			}
			_, tw := r.share(func(m shardMasterFig) float64 { return float64(m.Tasks) })
			_, cw := r.share(func(m shardMasterFig) float64 { return m.CPU })
			say(fmt.Sprintf("%.0f tasks/s in %v; Redis %.2f cores, Go %.2f cores, other %.2f cores; worst deviation from even: tasks %.1f%%, CPU %.1f%%",
				r.Rate, r.Dur.Round(time.Millisecond), r.redisCores(), r.GoCores, r.Other, 100*tw, 100*cw))
			if sharded {
				info.Sharded = append(info.Sharded, r)
			} else {
				info.Plain = append(info.Plain, r)
			}
		}
	}

	for _, sharded := range []bool{true, false} {
		fmt.Fprintf(e.progress, "%s  idle workers, sharded %v, for %v\n", time.Now().Format("15:04:05"), sharded, cfg.Idle)
		ir, err := e.shardIdle(ctx, cl, cfg, sharded)
		if err != nil {
			info.Errs = append(info.Errs, "idle workers: "+err.Error())
			say("idle workers failed: " + err.Error())
			break
		}
		say(fmt.Sprintf("%.1f XREADGROUP/s a worker, Redis CPU %.0f µs/s a worker", ir.ReadsPerWorker, ir.CPUPerWorker))
		info.Idle = append(info.Idle, ir)
	}

	if cfg.OrderKeys > 0 {
		fmt.Fprintf(e.progress, "%s  per-key order: %d partition keys × %d tasks through a %d-shard queue\n", time.Now().Format("15:04:05"), cfg.OrderKeys, cfg.OrderPer, cfg.Shards)
		oi, err := e.shardOrder(ctx, cl, cfg)
		if err != nil {
			info.Errs = append(info.Errs, "order check: "+err.Error())
			say("order check failed: " + err.Error())
		} else {
			info.Order = oi
			say(fmt.Sprintf("%d tasks in %v: %d out of order, %d overlapping, %d keys incomplete", oi.Tasks, oi.Dur.Round(time.Millisecond), oi.OutOfOrder, oi.Overlaps, oi.Incomplete))
		}
	}
	return info, nil
}

// clusterClient returns a cluster client of cl with pool (0: go-redis'
// default) connections per node.
func clusterClient(cl *cluster, pool int) *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.addrs(), PoolSize: pool, ContextTimeoutEnabled: true})
}

// masterSnap is what is read from every master before and after a run.
type masterSnap struct {
	s    []snap
	keys []int64
}

func takeMasterSnap(ctx context.Context, admins []*redis.Client) (masterSnap, error) {
	var ms masterSnap
	for _, a := range admins {
		s, err := takeSnap(ctx, a)
		if err != nil {
			return ms, fmt.Errorf("%s: %w", a.Options().Addr, err)
		}
		n, err := a.DBSize(ctx).Result()
		if err != nil {
			return ms, fmt.Errorf("DBSIZE on %s: %w", a.Options().Addr, err)
		}
		ms.s, ms.keys = append(ms.s, s), append(ms.keys, n)
	}
	return ms, nil
}

// shardFlow pushes cfg.Tasks no-op tasks through the queue (declared with
// cfg.Shards shards when sharded, else a plain queue) while cfg.Workers
// workers in this process run them, and reads every master's counters
// around it. The span measured runs from the first EnqueueMany to the
// moment every task ran and no entry is pending on any physical queue.
func (e *env) shardFlow(ctx context.Context, cl *cluster, cfg shardCfg, sharded bool, info *shardsInfo) (*shardRun, error) {
	if err := cl.flush(ctx); err != nil {
		return nil, err
	}
	admins := make([]*redis.Client, len(cl.masters))
	for i, m := range cl.masters {
		admins[i] = redis.NewClient(&redis.Options{Addr: m.addr})
		defer admins[i].Close()
	}
	prdb := clusterClient(cl, 0)
	defer prdb.Close()
	c, err := client.New(ctx, prdb, &client.Config{Logger: e.logger})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	q := "bench-shards"
	physical := []string{q}
	if sharded {
		names, err := c.DeclareShards(ctx, q, cfg.Shards)
		if err != nil {
			return nil, err
		}
		physical = append(physical, names...)
		if info.Names == nil {
			info.Names = names
			for _, n := range names {
				s := keys.QueueSlot(n)
				info.Slots = append(info.Slots, s)
				info.OnMaster = append(info.OnMaster, cl.masterOf(s))
			}
			info.PlainOn = cl.masterOf(keys.QueueSlot(q))
			info.RegOn = cl.masterOf(keys.Slot(keys.ShardRegistry))
			info.CoordOn = cl.masterOf(keys.Slot(keys.Queues))
		}
	}
	in := inspect.New(prdb)

	var handled atomic.Int64
	var target atomic.Int64
	target.Store(-1)
	reached := make(chan struct{}, 1)
	var ws []*worker.Worker
	var wrdbs []*redis.ClusterClient
	defer func() {
		for _, w := range ws {
			e.stopWorker(w)
		}
		for _, r := range wrdbs {
			_ = r.Close()
		}
	}()
	for i := 0; i < cfg.Workers; i++ {
		wrdb := clusterClient(cl, 64)
		wrdbs = append(wrdbs, wrdb)
		w, err := worker.New(ctx, wrdb, &worker.Config{
			Queues:       map[string]int{q: 1},
			Concurrency:  cfg.Conc,
			FetchBatch:   cfg.FetchBatch,
			BlockTimeout: blockTimeout,
			Logger:       e.logger,
		})
		if err != nil {
			return nil, err
		}
		worker.Handle(w, func(ctx context.Context, a noop) (struct{}, error) {
			if handled.Add(1) == target.Load() {
				select {
				case reached <- struct{}{}:
				default:
				}
			}
			return struct{}{}, nil
		})
		if err := w.Start(ctx); err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}

	// Warm up: every shard's consumer group made and read, the
	// connections open. 100 tasks a physical queue, not measured.
	warm := 100 * cfg.Shards
	target.Store(int64(warm))
	if _, err := c.EnqueueMany(ctx, noopSpecs(warm, q)); err != nil {
		return nil, err
	}
	if err := waitReached(ctx, reached, &handled, int64(warm), time.Minute); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	if err := waitIdle(ctx, in, physical); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	before0, err := statsOf(ctx, in, physical)
	if err != nil {
		return nil, err
	}

	e.settle(ctx)
	goal := int64(warm + cfg.Tasks)
	target.Store(goal)
	before, err := takeMasterSnap(ctx, admins)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	// Producers: cfg.Producers goroutines share the client (round-robin
	// placement is per client) and send cfg.Batch tasks a call, waiting
	// while more than cfg.Backlog tasks are enqueued and not yet handled.
	var enqueued atomic.Int64
	enqueued.Store(int64(warm))
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Producers)
	per := (cfg.Tasks + cfg.Producers - 1) / cfg.Producers
	for p := 0; p < cfg.Producers; p++ {
		quota := min(per, cfg.Tasks-p*per)
		if quota <= 0 {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			specs := noopSpecs(cfg.Batch, q)
			for sent := 0; sent < quota; {
				for enqueued.Load()-handled.Load() > int64(cfg.Backlog) {
					if ctx.Err() != nil {
						errs <- ctx.Err()
						return
					}
					time.Sleep(200 * time.Microsecond)
				}
				k := min(cfg.Batch, quota-sent)
				hs, err := c.EnqueueMany(ctx, specs[:k])
				if err != nil {
					errs <- err
					return
				}
				if len(hs) != k {
					errs <- fmt.Errorf("EnqueueMany returned %d handles for %d tasks", len(hs), k)
					return
				}
				enqueued.Add(int64(k))
				sent += k
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	limit := 2*time.Minute + time.Duration(cfg.Tasks)*50*time.Microsecond // 20,000 tasks/s at least
	if err := waitReached(ctx, reached, &handled, goal, limit); err != nil {
		return nil, err
	}
	if err := waitIdle(ctx, in, physical); err != nil {
		return nil, err
	}
	dur := time.Since(t0)
	after, err := takeMasterSnap(ctx, admins)
	if err != nil {
		return nil, err
	}
	after0, err := statsOf(ctx, in, physical)
	if err != nil {
		return nil, err
	}

	r := &shardRun{Sharded: sharded, Tasks: cfg.Tasks, Dur: dur, Rate: float64(cfg.Tasks) / dur.Seconds()}
	var total int64
	for i, m := range cl.masters {
		b, a := before.s[i], after.s[i]
		f := shardMasterFig{Addr: m.addr, Keys: after.keys[i] - before.keys[i], CPU: a.redisCPU - b.redisCPU,
			Reads: a.calls["xreadgroup"] - b.calls["xreadgroup"], Evalsha: a.calls["evalsha"] - b.calls["evalsha"]}
		for cmd, n := range a.calls {
			if cmd != "info" && cmd != "dbsize" {
				f.Cmds += n - b.calls[cmd]
			}
		}
		r.RedisCPU += f.CPU
		r.Masters = append(r.Masters, f)
	}
	for j, name := range physical {
		got := after0[j].Succeeded - before0[j].Succeeded
		total += got
		mi := cl.masterOf(keys.QueueSlot(name))
		if mi < 0 {
			return nil, fmt.Errorf("no master serves the slot of queue %q", name)
		}
		r.Masters[mi].Tasks += got
		if j > 0 || !sharded {
			r.Masters[mi].Shards++
		}
		if after0[j].Dead != 0 || after0[j].Running != 0 {
			return nil, fmt.Errorf("queue %s at the end: %d dead, %d running; want none", name, after0[j].Dead, after0[j].Running)
		}
	}
	if sharded && after0[0].Succeeded != before0[0].Succeeded {
		return nil, fmt.Errorf("%d tasks went to the plain queue %s of a sharded queue", after0[0].Succeeded-before0[0].Succeeded, q)
	}
	if total != int64(cfg.Tasks) {
		return nil, fmt.Errorf("the queues' succeeded counts grew by %d, want %d", total, cfg.Tasks)
	}
	if got := handled.Load(); got != goal {
		return nil, fmt.Errorf("handler ran %d times for %d tasks", got, goal)
	}
	// Other load: the machine's busy time less this process and every node.
	busy := after.s[0].busy - before.s[0].busy
	goT := after.s[len(after.s)-1].goCPU - before.s[0].goCPU
	r.GoCores = goT.Seconds() / dur.Seconds()
	r.Other = max((busy.Seconds()-goT.Seconds()-r.RedisCPU)/dur.Seconds(), 0)
	return r, nil
}

// statsOf reads the counts of every queue in names.
func statsOf(ctx context.Context, in *inspect.Inspector, names []string) ([]inspect.QueueInfo, error) {
	out := make([]inspect.QueueInfo, len(names))
	for i, n := range names {
		qi, err := in.Queue(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("queue %s: %w", n, err)
		}
		out[i] = qi
	}
	return out, nil
}

// waitReached waits until the handler count reached want (a signal on
// reached, or the count already there), up to d.
func waitReached(ctx context.Context, reached <-chan struct{}, handled *atomic.Int64, want int64, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for handled.Load() < want {
		select {
		case <-reached:
		case <-t.C:
			return fmt.Errorf("handled %d of %d tasks within %v", handled.Load(), want, d)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// waitIdle polls the queues until none has an entry pending (every outcome
// recorded), up to 30 s.
func waitIdle(ctx context.Context, in *inspect.Inspector, names []string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		qs, err := statsOf(ctx, in, names)
		if err != nil {
			return err
		}
		busy := slices.IndexFunc(qs, func(q inspect.QueueInfo) bool { return q.Running != 0 })
		if busy < 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("queue %s still has %d entries pending after 30 s", names[busy], qs[busy].Running)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ordered is a task of the order check: key K's S-th task.
type ordered struct {
	K int `msgpack:"k"`
	S int `msgpack:"s"`
}

func (ordered) Kind() string { return "ordered" }

// shardOrder enqueues cfg.OrderPer tasks for each of cfg.OrderKeys
// partition keys to a sharded queue (each key's tasks in sequence, by one
// producer; keys spread over cfg.Producers producers, EnqueueMany of
// cfg.Batch), while cfg.Workers workers run them; the handler checks that
// each key's tasks come in sequence and never two at once.
func (e *env) shardOrder(ctx context.Context, cl *cluster, cfg shardCfg) (*orderInfo, error) {
	if err := cl.flush(ctx); err != nil {
		return nil, err
	}
	prdb := clusterClient(cl, 0)
	defer prdb.Close()
	c, err := client.New(ctx, prdb, &client.Config{Logger: e.logger})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	q := "bench-order"
	names, err := c.DeclareShards(ctx, q, cfg.Shards)
	if err != nil {
		return nil, err
	}
	in := inspect.New(prdb)
	oi := &orderInfo{Keys: cfg.OrderKeys, Per: cfg.OrderPer, Tasks: cfg.OrderKeys * cfg.OrderPer}

	var mu sync.Mutex
	next := make([]int, cfg.OrderKeys)       // the sequence number key k expects next
	running := make([]bool, cfg.OrderKeys)   // a task of key k runs
	seen := make([]int, cfg.OrderKeys)       // runs of key k
	shardOf := make([]string, cfg.OrderKeys) // the physical queue key k's tasks ran on
	fault := func(s string) {
		if len(oi.Examples) < 5 {
			oi.Examples = append(oi.Examples, s)
		}
	}
	var handled atomic.Int64
	reached := make(chan struct{}, 1)
	total := int64(oi.Tasks)
	var ws []*worker.Worker
	var wrdbs []*redis.ClusterClient
	defer func() {
		for _, w := range ws {
			e.stopWorker(w)
		}
		for _, r := range wrdbs {
			_ = r.Close()
		}
	}()
	for i := 0; i < cfg.Workers; i++ {
		wrdb := clusterClient(cl, 64)
		wrdbs = append(wrdbs, wrdb)
		w, err := worker.New(ctx, wrdb, &worker.Config{
			Queues: map[string]int{q: 1}, Concurrency: cfg.Conc, FetchBatch: cfg.FetchBatch,
			BlockTimeout: blockTimeout, Logger: e.logger,
		})
		if err != nil {
			return nil, err
		}
		worker.Handle(w, func(ctx context.Context, a ordered) (struct{}, error) {
			t, _ := worker.TaskFromContext(ctx)
			mu.Lock()
			if shardOf[a.K] == "" {
				shardOf[a.K] = t.Queue
			} else if shardOf[a.K] != t.Queue {
				oi.TwoShards++
				fault(fmt.Sprintf("key %d: task %d ran on %s, earlier ones on %s", a.K, a.S, t.Queue, shardOf[a.K]))
			}
			if running[a.K] {
				oi.Overlaps++
				fault(fmt.Sprintf("key %d: task %d started while another of the key ran", a.K, a.S))
			}
			if a.S != next[a.K] {
				oi.OutOfOrder++
				fault(fmt.Sprintf("key %d: task %d ran when %d was next", a.K, a.S, next[a.K]))
			}
			running[a.K] = true
			next[a.K] = a.S + 1
			seen[a.K]++
			mu.Unlock()
			// Let another worker's handler have a chance to overlap, were
			// the key's order not held.
			time.Sleep(50 * time.Microsecond)
			mu.Lock()
			running[a.K] = false
			mu.Unlock()
			if handled.Add(1) == total {
				reached <- struct{}{}
			}
			return struct{}{}, nil
		})
		if err := w.Start(ctx); err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}

	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Producers)
	for p := 0; p < cfg.Producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var specs []client.Spec
			flush := func() error {
				if len(specs) == 0 {
					return nil
				}
				_, err := c.EnqueueMany(ctx, specs)
				specs = specs[:0]
				return err
			}
			// Producer p owns the keys k ≡ p (mod Producers) and sends
			// their tasks in sequence: round s holds task s of each key.
			for s := 0; s < cfg.OrderPer; s++ {
				for k := p; k < cfg.OrderKeys; k += cfg.Producers {
					specs = append(specs, client.Spec{Args: ordered{K: k, S: s}, Opts: &client.EnqueueOpts{Queue: q, PartitionKey: fmt.Sprintf("key-%d", k)}})
					if len(specs) == cfg.Batch {
						if err := flush(); err != nil {
							errs <- err
							return
						}
					}
				}
			}
			if err := flush(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	if err := waitReached(ctx, reached, &handled, total, 2*time.Minute+time.Duration(total)*time.Millisecond); err != nil {
		return nil, err
	}
	if err := waitIdle(ctx, in, append([]string{q}, names...)); err != nil {
		return nil, err
	}
	oi.Dur = time.Since(t0)
	for k := range cfg.OrderKeys {
		if seen[k] != cfg.OrderPer || next[k] != cfg.OrderPer {
			oi.Incomplete++
			fault(fmt.Sprintf("key %d: %d runs, last task %d, want %d runs", k, seen[k], next[k]-1, cfg.OrderPer))
		}
	}
	// Where the keys went: the shard each key's tasks ran on (as the
	// handler saw it), against the placement rule (FNV-1a of the key mod
	// N), and the shards' counts.
	qs, err := statsOf(ctx, in, names)
	if err != nil {
		return nil, err
	}
	for _, qi := range qs {
		oi.TasksPerShard = append(oi.TasksPerShard, qi.Succeeded)
	}
	oi.KeysPerShard = make([]int, cfg.Shards)
	for k, name := range shardOf {
		i := slices.Index(names, name)
		if i < 0 {
			oi.Misplaced++
			fault(fmt.Sprintf("key %d ran on %q, not a shard of %s", k, name, q))
			continue
		}
		oi.KeysPerShard[i]++
		if want := engine.ShardOf(fmt.Sprintf("key-%d", k), cfg.Shards); i != want {
			oi.Misplaced++
			fault(fmt.Sprintf("key %d ran on shard %d, the placement rule says %d", k, i, want))
		}
	}
	return oi, nil
}

// markdown is the shards section of the report.
func (si *shardsInfo) markdown() string {
	var b strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	if si.WaitOnly {
		for _, e := range si.Errs {
			p("**Failed:** %s\n\n", e)
		}
		b.WriteString(si.Wait.markdown())
		return b.String()
	}
	cfg := si.Cfg
	p("### Sharded queue on a %d-master Redis Cluster (issue 21)\n\n", cfg.Masters)
	p("A local Redis Cluster of %d masters, no replicas, started by the bench (`redis-cli --cluster create`, cluster-node-timeout %v; ready in %v). ",
		cfg.Masters, nodeTimeout, si.Started.Round(100*time.Millisecond))
	p("%s no-op tasks a run through a queue declared with %d shards (`client.DeclareShards`), and in turn the same tasks through one plain queue on the same cluster (the baseline of the same run); %d run(s) of each, the order swapped every round. ",
		thousands(float64(cfg.Tasks)), cfg.Shards, cfg.Reps)
	p("%d producer goroutines share one client, `EnqueueMany` of %d tasks a call (no ID, no partition key: round-robin over the shards), waiting while more than %s tasks are enqueued and not run; %d workers in this process (Concurrency %d, FetchBatch %d, BlockTimeout %v), each with its own cluster client, serve the queue, a no-op handler. ",
		cfg.Producers, cfg.Batch, thousands(float64(cfg.Backlog)), cfg.Workers, cfg.Conc, cfg.FetchBatch, blockTimeout)
	p("A run is measured from the first `EnqueueMany` until every task ran and nothing is pending on any physical queue; `INFO cpu`, `INFO commandstats` and `DBSIZE` are read on every master before and after.\n\n")

	if len(si.Names) > 0 {
		p("Placement (`keys.PlaceShards`): ")
		perM := make([][]string, len(si.Addrs))
		for i := range si.Names {
			if m := si.OnMaster[i]; m >= 0 {
				perM[m] = append(perM[m], fmt.Sprintf("%d (slot %d)", i, si.Slots[i]))
			}
		}
		for m, l := range perM {
			if m > 0 {
				p("; ")
			}
			p("master %d: shards %s", m+1, strings.Join(l, ", "))
		}
		p(". The plain queue's slot is on master %d, the shard registry's (`{reg}`) on master %d, the coordinators' keys (`{coord}`: queue index, worker registry) on master %d.\n\n",
			si.PlainOn+1, si.RegOn+1, si.CoordOn+1)
	}
	for _, e := range si.Errs {
		p("**Failed:** %s\n\n", e)
	}
	if len(si.Sharded) == 0 {
		return b.String()
	}

	med := medianShard(si.Sharded)
	tasks := func(m shardMasterFig) float64 { return float64(m.Tasks) }
	keysF := func(m shardMasterFig) float64 { return float64(m.Keys) }
	cpu := func(m shardMasterFig) float64 { return m.CPU }
	p("Each master's share, %d-shard queue, the run of median throughput (%s tasks/s); even is %.1f %%:\n\n", cfg.Shards, thousands(med.Rate), 100/float64(cfg.Masters))
	p("| Master | Shards | Tasks | Share of tasks | Keys added | Share of keys | Redis CPU | Share of Redis CPU | Redis CPU µs/task | Projected tasks/s a core | Cmds/task | XREADGROUP/task |\n")
	p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	ts, _ := med.share(tasks)
	ks, _ := med.share(keysF)
	cs, _ := med.share(cpu)
	for i, m := range med.Masters {
		us := m.CPU * 1e6 / float64(max(m.Tasks, 1))
		p("| %d | %d | %s | %.1f %% | %s | %.1f %% | %.2f s | %.1f %% | %.2f | %s | %.2f | %.3f |\n",
			i+1, m.Shards, thousands(float64(m.Tasks)), 100*ts[i], thousands(float64(m.Keys)), 100*ks[i], m.CPU, 100*cs[i], us, thousands(1e6/us),
			float64(m.Cmds)/float64(max(m.Tasks, 1)), float64(m.Reads)/float64(max(m.Tasks, 1)))
	}
	p("\n")
	verdict := func(what string, f func(shardMasterFig) float64) {
		var worst []float64
		var all []string
		for _, r := range si.Sharded {
			_, w := r.share(f)
			worst = append(worst, w)
			all = append(all, fmt.Sprintf("%.1f %%", 100*w))
		}
		m := medianOf(worst)
		p("| %s | ±15 %% | %.1f %% | %s | %s |\n", what, 100*m, met(m <= 0.15), strings.Join(all, ", "))
	}
	p("| Share within ±15 %% of even | Goal | Worst master, median of runs | Met | Every run's worst |\n|---|--:|--:|:-:|---|\n")
	verdict("Tasks (stream entries run)", tasks)
	verdict("Keys (DBSIZE after − before)", keysF)
	verdict("Redis CPU (used_cpu_sys + used_cpu_user)", cpu)
	p("\n")

	p("Throughput, sharded against plain on the same cluster (medians; the machine's 2 cores bound both):\n\n")
	p("| Queue | Tasks/s (median) | Runs | Redis CPU µs/task (all masters) | Redis cores | Go cores | Other load | Busiest master's share of Redis CPU |\n|---|--:|---|--:|--:|--:|--:|--:|\n")
	row := func(label string, rs []*shardRun) {
		if len(rs) == 0 {
			return
		}
		m := medianShard(rs)
		var runs []string
		for _, r := range rs {
			runs = append(runs, thousands(r.Rate))
		}
		cs, _ := m.share(cpu)
		p("| %s | %s | %s | %.2f | %.2f | %.2f | %.2f | %.1f %% |\n", label, thousands(m.Rate), strings.Join(runs, ", "),
			m.RedisCPU*1e6/float64(m.Tasks), m.redisCores(), m.GoCores, m.Other, 100*slices.Max(cs))
	}
	row(fmt.Sprintf("%d shards over %d masters", cfg.Shards, cfg.Masters), si.Sharded)
	row("one plain queue (one master)", si.Plain)
	if len(si.Plain) > 0 {
		ms, mp := medianShard(si.Sharded), medianShard(si.Plain)
		p("\nSharded ÷ plain: throughput %.2f, Redis CPU per task %.2f.\n", ms.Rate/mp.Rate, (ms.RedisCPU/float64(ms.Tasks))/(mp.RedisCPU/float64(mp.Tasks)))
	}
	used := med.redisCores() + med.GoCores + med.Other
	var usMin, usMax float64
	for i, m := range med.Masters {
		us := m.CPU * 1e6 / float64(max(m.Tasks, 1))
		if i == 0 || us < usMin {
			usMin = us
		}
		usMax = max(usMax, us)
	}
	p("\nThe end-to-end figure is bounded by this machine's CPU, not by Redis: in the median sharded run Redis used %.2f cores in all, this process (producers and workers) %.2f, other processes %.2f: %.2f of the 2 cores. The busiest master used %.0f %% of a core. ",
		med.redisCores(), med.GoCores, med.Other, used, 100*slices.MaxFunc(med.Masters, func(a, b shardMasterFig) int { return cmpF(a.CPU, b.CPU) }).CPU/med.Dur.Seconds())
	p("What a master would sustain with a core of its own is 1 s ÷ its Redis CPU per task: %s to %s tasks/s a master (%.2f to %.2f µs/task), so %s tasks/s for the %d masters, if the producers and workers ran elsewhere (projected, not measured).\n\n",
		thousands(1e6/usMax), thousands(1e6/usMin), usMin, usMax, thousands(float64(cfg.Masters)*1e6/usMax), cfg.Masters)
	if len(si.Idle) > 0 {
		p("Idle workers (the fetch fan-out): %d workers with default settings (Concurrency 100, FetchBatch 256, BlockTimeout 1s) serving an empty queue, watched for %v after 2 s to settle; the masters' own CPU without workers over the same span before (%.0f µs/s in all, crons and cluster gossip) is taken out:\n\n", si.Idle[0].Workers, si.Idle[0].Dur, si.Idle[0].ClusterIdleCPU)
		p("| Queue | Physical queues a worker serves | XREADGROUP/s a worker | Commands/s a worker | Redis CPU µs/s a worker (all masters) | XREADGROUP/s on each master (all workers) | Commands/s a worker by name |\n|---|--:|--:|--:|--:|---|---|\n")
		for _, ir := range si.Idle {
			label := "one plain queue"
			if ir.Sharded {
				label = fmt.Sprintf("%d shards (and the plain queue)", cfg.Shards)
			}
			var by []string
			for _, r := range ir.ReadsByMaster {
				by = append(by, fmt.Sprintf("%.1f", r))
			}
			p("| %s | %d | %.1f | %.1f | %.0f | %s | %s |\n", label, ir.Physical, ir.ReadsPerWorker, ir.CmdsPerWorker, ir.CPUPerWorker, strings.Join(by, ", "), topCmds(ir.ByCmd))
		}
		p("\n")
	}
	if oi := si.Order; oi != nil {
		p("Per-key order across shards: %d partition keys × %d tasks (`EnqueueOpts.PartitionKey`, %s tasks) through a %d-shard queue, each key's tasks enqueued in sequence by one of %d producers, %d workers in this process; the handler records each key's sequence numbers and whether another task of the key is running (each run holds its key 50 µs). ",
			oi.Keys, oi.Per, thousands(float64(oi.Tasks)), cfg.Shards, cfg.Producers, cfg.Workers)
		ks := make([]int64, len(oi.KeysPerShard))
		for i, k := range oi.KeysPerShard {
			ks[i] = int64(k)
		}
		held := oi.OutOfOrder == 0 && oi.Overlaps == 0 && oi.Incomplete == 0 && oi.TwoShards == 0 && oi.Misplaced == 0
		p("Took %v (%s tasks/s). Keys per shard (as the handler saw each task's queue): %s; tasks per shard: %s. Runs out of order: %d; overlapping runs of one key: %d; keys missing a run or run twice: %d; runs on a second shard: %d; keys off the shard FNV-1a(key) mod %d gives: %d: **%s**.\n",
			oi.Dur.Round(time.Millisecond), thousands(float64(oi.Tasks)/oi.Dur.Seconds()), joinInts(ks), joinInts(oi.TasksPerShard),
			oi.OutOfOrder, oi.Overlaps, oi.Incomplete, oi.TwoShards, cfg.Shards, oi.Misplaced, map[bool]string{true: "order held", false: "order not held"}[held])
		for _, ex := range oi.Examples {
			p("- %s\n", ex)
		}
		p("\n")
	}
	if si.Wait != nil {
		b.WriteString(si.Wait.markdown())
	}
	return b.String()
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func joinInts(xs []int64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = thousands(float64(x))
	}
	return strings.Join(s, ", ")
}

// medianShard returns the run of median throughput.
func medianShard(rs []*shardRun) *shardRun {
	s := slices.Clone(rs)
	sort.Slice(s, func(i, j int) bool { return s[i].Rate < s[j].Rate })
	return s[len(s)/2]
}
