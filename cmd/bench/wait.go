package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
)

// The durable enqueue sub-phase of the shards phase (issue 21): enqueue
// throughput and latency with client.Config.WaitReplicas set and without
// it, in turn, on a local cluster of masters with a replica each.

// waitCfg is its workload.
type waitCfg struct {
	Masters   int           // masters, each with one replica
	Many      int           // tasks a throughput run
	Producers int           // goroutines calling EnqueueMany
	Batch     int           // tasks an EnqueueMany call
	Conc      int           // goroutines of the concurrent Enqueue run
	ConcN     int           // tasks of the concurrent Enqueue run
	Seq       int           // sequential Enqueue calls, each timed
	Timeout   time.Duration // WaitTimeout
	Reps      int
}

// waitSide is one side (durable or not) of one round.
type waitSide struct {
	Durable   bool
	ManyRate  float64 // EnqueueMany tasks/s
	ShardRate float64 // EnqueueMany tasks/s to a queue sharded over the masters
	ConcRate  float64 // concurrent Enqueue tasks/s
	SeqP50    time.Duration
	SeqP99    time.Duration
	SeqMax    time.Duration
	ManyCPU   float64 // Redis CPU µs/task of the EnqueueMany run, masters and replicas
}

// waitInfo is the durable-enqueue sub-phase's section.
type waitInfo struct {
	Cfg     waitCfg
	Started time.Duration
	Plain   []waitSide
	Durable []waitSide
	Note    string // why it did not run, if it did not
}

// waitRun starts a cluster of cfg.Masters masters with a replica each and
// measures the enqueues with and without the option, in turn (the order
// swapped every round), cfg.Reps rounds.
func (e *env) waitRun(ctx context.Context, cfg waitCfg, hold func(*cluster)) (*waitInfo, error) {
	wi := &waitInfo{Cfg: cfg}
	if !setDurable(&client.Config{}, 1, cfg.Timeout) {
		wi.Note = "Not measured: " + errNoDurable.Error() + "."
		return wi, nil
	}
	t0 := time.Now()
	say := func(s string) { fmt.Fprintf(e.progress, "  %s\n", s) }
	cl, err := startCluster(ctx, cfg.Masters, 1, say)
	if err != nil {
		return nil, err
	}
	hold(cl)
	defer func() {
		cl.stop()
		hold(nil)
	}()
	wi.Started = time.Since(t0)
	say(fmt.Sprintf("cluster with replicas ready in %v: pids %v", wi.Started.Round(time.Millisecond), cl.pids()))
	for i := 0; i < cfg.Reps; i++ {
		for _, durable := range []bool{false, true} {
			if i%2 == 1 {
				durable = !durable
			}
			fmt.Fprintf(e.progress, "%s  enqueue, durable %v (round %d of %d)\n", time.Now().Format("15:04:05"), durable, i+1, cfg.Reps)
			s, err := e.waitSide(ctx, cl, cfg, durable)
			if err != nil {
				return wi, err
			}
			say(fmt.Sprintf("EnqueueMany %.0f tasks/s (Redis %.2f µs/task), to %d shards %.0f tasks/s, Enqueue ×%d %.0f tasks/s, sequential Enqueue p50 %v p99 %v",
				s.ManyRate, s.ManyCPU, 2*cfg.Masters, s.ShardRate, cfg.Conc, s.ConcRate, s.SeqP50, s.SeqP99))
			if durable {
				wi.Durable = append(wi.Durable, s)
			} else {
				wi.Plain = append(wi.Plain, s)
			}
		}
	}
	return wi, nil
}

// waitSide measures one side on an emptied cluster.
func (e *env) waitSide(ctx context.Context, cl *cluster, cfg waitCfg, durable bool) (waitSide, error) {
	s := waitSide{Durable: durable}
	if err := cl.flush(ctx); err != nil {
		return s, err
	}
	rdb := clusterClient(cl, 0)
	defer rdb.Close()
	ccfg := &client.Config{Logger: e.logger}
	if durable && !setDurable(ccfg, 1, cfg.Timeout) {
		return s, errNoDurable
	}
	c, err := client.New(ctx, rdb, ccfg)
	if err != nil {
		return s, err
	}
	defer c.Close()
	q := "bench-wait"
	opts := &client.EnqueueOpts{Queue: q}
	for range 200 { // warm up: the scripts loaded, connections open
		if _, err := c.Enqueue(ctx, noop{}, opts); err != nil {
			return s, err
		}
	}
	var nodes []*redis.Client
	for _, a := range cl.addrs() {
		r := redis.NewClient(&redis.Options{Addr: a})
		defer r.Close()
		nodes = append(nodes, r)
	}
	cpu := func() (float64, error) {
		t := 0.0
		for _, n := range nodes {
			sn, err := takeSnap(ctx, n)
			if err != nil {
				return 0, err
			}
			t += sn.redisCPU
		}
		return t, nil
	}

	// EnqueueMany from cfg.Producers goroutines.
	e.settle(ctx)
	c0, err := cpu()
	if err != nil {
		return s, err
	}
	start := time.Now()
	if err := splitOver(cfg.Producers, cfg.Many, func(n int) error {
		specs := noopSpecs(cfg.Batch, q)
		for sent := 0; sent < n; sent += cfg.Batch {
			if _, err := c.EnqueueMany(ctx, specs[:min(cfg.Batch, n-sent)]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return s, fmt.Errorf("EnqueueMany: %w", err)
	}
	s.ManyRate = float64(cfg.Many) / time.Since(start).Seconds()
	c1, err := cpu()
	if err != nil {
		return s, err
	}
	s.ManyCPU = (c1 - c0) * 1e6 / float64(cfg.Many)

	// The same EnqueueMany to a queue with two shards on each master: a
	// call's tasks go to every master, each part waited for on its own.
	sq := "bench-wait-sharded"
	if _, err := c.DeclareShards(ctx, sq, 2*cfg.Masters); err != nil {
		return s, err
	}
	if _, err := c.EnqueueMany(ctx, noopSpecs(cfg.Batch, sq)); err != nil { // warm up
		return s, err
	}
	e.settle(ctx)
	start = time.Now()
	if err := splitOver(cfg.Producers, cfg.Many, func(n int) error {
		specs := noopSpecs(cfg.Batch, sq)
		for sent := 0; sent < n; sent += cfg.Batch {
			if _, err := c.EnqueueMany(ctx, specs[:min(cfg.Batch, n-sent)]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return s, fmt.Errorf("EnqueueMany to a sharded queue: %w", err)
	}
	s.ShardRate = float64(cfg.Many) / time.Since(start).Seconds()

	// Enqueue from cfg.Conc goroutines.
	e.settle(ctx)
	start = time.Now()
	if err := splitOver(cfg.Conc, cfg.ConcN, func(n int) error {
		for range n {
			if _, err := c.Enqueue(ctx, noop{}, opts); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return s, fmt.Errorf("concurrent Enqueue: %w", err)
	}
	s.ConcRate = float64(cfg.ConcN) / time.Since(start).Seconds()

	// Sequential Enqueue, each call timed.
	e.settle(ctx)
	lat := make([]time.Duration, 0, cfg.Seq)
	for range cfg.Seq {
		t := time.Now()
		if _, err := c.Enqueue(ctx, noop{}, opts); err != nil {
			return s, fmt.Errorf("sequential Enqueue: %w", err)
		}
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	s.SeqP50, s.SeqP99, s.SeqMax = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	return s, nil
}

// splitOver runs f in g goroutines, splitting n among them, and returns the
// first error.
func splitOver(g, n int, f func(n int) error) error {
	var wg sync.WaitGroup
	var first atomic.Value
	per := (n + g - 1) / g
	for i := 0; i < g; i++ {
		k := min(per, n-i*per)
		if k <= 0 {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(k); err != nil {
				first.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return err
	}
	return nil
}

func (wi *waitInfo) markdown() string {
	if wi == nil {
		return ""
	}
	var b strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	cfg := wi.Cfg
	p("#### Durable enqueue (WAIT)\n\n")
	if wi.Note != "" {
		p("%s\n\n", wi.Note)
		return b.String()
	}
	p("A second local cluster: %d masters, each with one replica (ready in %v). One client on it, without and with `client.Config{WaitReplicas: 1, WaitTimeout: %v}` in turn (a fresh client and an emptied cluster each time; the order swapped every round; %d rounds, medians shown). ",
		cfg.Masters, wi.Started.Round(100*time.Millisecond), cfg.Timeout, cfg.Reps)
	p("EnqueueMany: %s tasks from %d goroutines, %d tasks a call; Enqueue: %s tasks from %d goroutines; sequential Enqueue: %s calls from one goroutine, each timed. One plain queue (one master), and for the second row a queue of %d shards (two on each master), no workers. In the ratio column, below 1 is slower for tasks/s, above 1 is slower for latency.\n\n",
		thousands(float64(cfg.Many)), cfg.Producers, cfg.Batch, thousands(float64(cfg.ConcN)), cfg.Conc, thousands(float64(cfg.Seq)), 2*cfg.Masters)
	if len(wi.Plain) == 0 || len(wi.Durable) == 0 {
		return b.String()
	}
	medF := func(ss []waitSide, f func(waitSide) float64) float64 {
		var v []float64
		for _, s := range ss {
			v = append(v, f(s))
		}
		return medianOf(v)
	}
	all := func(ss []waitSide, f func(waitSide) float64, unit string) string {
		var v []string
		for _, s := range ss {
			x := f(s)
			if unit == "ms" {
				v = append(v, fmt.Sprintf("%.3f", x))
			} else {
				v = append(v, thousands(x))
			}
		}
		return strings.Join(v, ", ")
	}
	p("| Measurement | Without | With WaitReplicas 1 | With ÷ without | Runs without | Runs with |\n|---|--:|--:|--:|---|---|\n")
	row := func(label, unit string, f func(waitSide) float64) {
		a, d := medF(wi.Plain, f), medF(wi.Durable, f)
		show := func(x float64) string {
			if unit == "ms" {
				return fmt.Sprintf("%.3f ms", x)
			}
			return thousands(x) + unit
		}
		p("| %s | %s | %s | %.2f | %s | %s |\n", label, show(a), show(d), d/a, all(wi.Plain, f, unit), all(wi.Durable, f, unit))
	}
	msOf := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	row("EnqueueMany, tasks/s", "/s", func(s waitSide) float64 { return s.ManyRate })
	row(fmt.Sprintf("EnqueueMany to a %d-shard queue (2 a master), tasks/s", 2*cfg.Masters), "/s", func(s waitSide) float64 { return s.ShardRate })
	row(fmt.Sprintf("Enqueue, %d goroutines, tasks/s", cfg.Conc), "/s", func(s waitSide) float64 { return s.ConcRate })
	row("Enqueue, 1 goroutine, p50", "ms", func(s waitSide) float64 { return msOf(s.SeqP50) })
	row("Enqueue, 1 goroutine, p99", "ms", func(s waitSide) float64 { return msOf(s.SeqP99) })
	p("| EnqueueMany, Redis CPU µs/task (masters and replicas) | %.2f | %.2f | %.2f | | |\n",
		medF(wi.Plain, func(s waitSide) float64 { return s.ManyCPU }), medF(wi.Durable, func(s waitSide) float64 { return s.ManyCPU }),
		medF(wi.Durable, func(s waitSide) float64 { return s.ManyCPU })/medF(wi.Plain, func(s waitSide) float64 { return s.ManyCPU }))
	p("\n")
	return b.String()
}
