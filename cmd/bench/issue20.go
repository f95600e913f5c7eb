package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

// The targets of issue 20, each a ratio of two figures of the same run.
const (
	goalDrainOfCeiling   = 0.5  // drain, default settings ÷ ceiling drain
	goalManyOfCeiling    = 0.7  // EnqueueMany ÷ ceiling pipelined XADD
	goalSeqOfEvalsha     = 0.8  // sequential Enqueue ÷ redis-benchmark -c 1 EVALSHA one-XADD script
	goalSeqGoCPU         = 15.0 // sequential Enqueue: Go CPU µs per call, at most
	goalSeqCmds          = 2.0  // sequential Enqueue: Redis commands per call, at most
	goalConcOfSeq        = 3.0  // 16 goroutines ÷ sequential Enqueue
	goalManyOfXaddP16    = 0.5  // EnqueueMany ÷ redis-benchmark -P 16 XADD
	goalDefaultOfBest    = 0.9  // drain, default settings ÷ best swept setting
	goalDrainRedisCPU    = 6.0  // Redis CPU µs per drained no-op task (defaults), at most
	goalTwoProcs         = 1.6  // two worker processes ÷ one
	goalPartitionOfPlain = 0.6  // partitioned tasks ÷ the same tasks without keys
	goalABRegression     = 0.05 // no row slower than the A/B's other revision by more than this
)

// Row keys (result.Key) the targets look rows up by.
const (
	keyMany         = "many"
	keySeq          = "seq"
	keyConc         = "conc"
	keyDrainBest    = "drain-best"
	keyDrainDefault = "drain-default"
	keyProcs1       = "procs-1"
	keyProcs2       = "procs-2"
	keyCeilEnqueue  = "ceiling-enqueue"
	keyCeilDrain    = "ceiling-drain"
)

// base20 is the redis-benchmark baselines of issue 20, each the median of
// several runs: EVALSHA of a one-XADD script from one client, unpipelined,
// and XADD from 50 clients, pipeline 16, both with the tasks' payload size.
type base20 struct {
	Payload  int
	Evalsha  baseline
	EvalRuns []float64
	XaddP16  baseline
	XaddRuns []float64
}

// oneXadd is the script of the EVALSHA baseline.
const oneXadd = "return redis.call('XADD', KEYS[1], '*', 'm', ARGV[1])"

// baselines20 runs the two baselines reps times each, alternating.
func (e *env) baselines20(ctx context.Context, seqN, n, reps, payload int) (*base20, error) {
	sha, err := e.admin.ScriptLoad(ctx, oneXadd).Result()
	if err != nil {
		return nil, err
	}
	b := &base20{Payload: payload}
	value := strings.Repeat("x", payload)
	var evals, xadds []baseline
	for i := 0; i < reps; i++ {
		key := "async-bench:baseline:{b-" + randHex(4) + "}:s"
		e.settle(ctx)
		ev := runBaselineCmd(ctx, e.admin, e.addr, seqN, 1, 1, "EVALSHA of a one-XADD script, 1 client, unpipelined",
			[]string{"EVALSHA", sha, "1", key, value}, fmt.Sprintf("EVALSHA <sha1 of: %s> 1 <key> <%d bytes>", oneXadd, payload), key)
		if ev.Err != "" {
			return nil, fmt.Errorf("redis-benchmark EVALSHA: %s", ev.Err)
		}
		fmt.Fprintf(e.progress, "  EVALSHA one-XADD -c 1: %.0f requests/s, Redis CPU %.2f µs/request\n", ev.RPS, ev.RedisCPUus)
		evals = append(evals, ev)
		key = "async-bench:baseline:{b-" + randHex(4) + "}:s"
		e.settle(ctx)
		xa := runBaselineCmd(ctx, e.admin, e.addr, n, 50, 16, "XADD, 50 clients, pipeline 16, the tasks' payload size",
			[]string{"XADD", key, "*", "m", value}, fmt.Sprintf("XADD <key> '*' m <%d bytes>", payload), key)
		if xa.Err != "" {
			return nil, fmt.Errorf("redis-benchmark XADD: %s", xa.Err)
		}
		fmt.Fprintf(e.progress, "  XADD -c 50 -P 16: %.0f requests/s, Redis CPU %.2f µs/request\n", xa.RPS, xa.RedisCPUus)
		xadds = append(xadds, xa)
	}
	med := func(bs []baseline) (baseline, []float64) {
		runs := make([]float64, len(bs))
		for i, x := range bs {
			runs[i] = x.RPS
		}
		s := append([]baseline(nil), bs...)
		sort.Slice(s, func(i, j int) bool { return s[i].RPS < s[j].RPS })
		return s[len(s)/2], runs
	}
	b.Evalsha, b.EvalRuns = med(evals)
	b.XaddP16, b.XaddRuns = med(xadds)
	return b, nil
}

// alternate runs a and b in turn, reps times each, and returns the median
// of each.
func alternate(reps int, a, b func(i int) (*result, error)) (*result, *result, error) {
	var as, bs []*result
	for i := 0; i < reps; i++ {
		ra, err := a(i)
		if err != nil {
			return nil, nil, err
		}
		rb, err := b(i)
		if err != nil {
			return nil, nil, err
		}
		as, bs = append(as, ra), append(bs, rb)
	}
	return median(as), median(bs), nil
}

// rowByKey returns the row of r with that key, or nil.
func (r *report) rowByKey(key string) *result {
	for _, x := range r.Rows {
		if x.Key == key {
			return x
		}
	}
	for _, x := range r.Ceiling {
		if x.Key == key {
			return x
		}
	}
	return nil
}

// ofCeiling is x's rate as a fraction of the ceiling of its side, or 0.
func (r *report) ofCeiling(x *result) float64 {
	var c *result
	switch x.Side {
	case "enqueue":
		c = r.rowByKey(keyCeilEnqueue)
	case "drain":
		c = r.rowByKey(keyCeilDrain)
	}
	if c == nil || c.Rate == 0 || c == x {
		return 0
	}
	return x.Rate / c.Rate
}

// target20 is one line of the issue 20 targets table.
type target20 struct {
	What, Goal, Measured, Baseline string
	Ratio                          string
	Met                            string
}

// targets20 computes every target it has the figures for; a target whose
// phase did not run says which phase it needs.
func (r *report) targets20() []target20 {
	var out []target20
	need := func(what, goal, phases string) {
		out = append(out, target20{What: what, Goal: goal, Measured: "not measured (needs --only " + phases + ")", Ratio: "—", Met: "—"})
	}
	rate := func(x *result) string { return thousands(x.Rate) + "/s" }
	ratio := func(what string, goal float64, a, b *result, bLabel string, phases string) {
		g := fmt.Sprintf("≥ %.2f×", goal)
		if a == nil || b == nil || b.Rate == 0 {
			need(what, g, phases)
			return
		}
		q := a.Rate / b.Rate
		out = append(out, target20{What: what, Goal: g, Measured: rate(a), Baseline: rate(b) + " (" + bLabel + ")", Ratio: fmt.Sprintf("%.2f", q), Met: met(q >= goal)})
	}
	vsBase := func(what string, goal float64, a *result, b baseline, ok bool, bLabel, phases string) {
		g := fmt.Sprintf("≥ %.2f×", goal)
		if a == nil || !ok || b.RPS == 0 {
			need(what, g, phases)
			return
		}
		q := a.Rate / b.RPS
		out = append(out, target20{What: what, Goal: g, Measured: rate(a), Baseline: thousands(b.RPS) + "/s (" + bLabel + ")", Ratio: fmt.Sprintf("%.2f", q), Met: met(q >= goal)})
	}
	atMost := func(what string, goal, got float64, x *result, unit, phases string) {
		g := fmt.Sprintf("≤ %.0f %s", goal, unit)
		if x == nil {
			need(what, g, phases)
			return
		}
		out = append(out, target20{What: what, Goal: g, Measured: fmt.Sprintf("%.2f %s", got, unit), Baseline: "—", Ratio: fmt.Sprintf("%.2f", goal/max(got, 1e-9)), Met: met(got <= goal)})
	}

	many, seq, conc := r.rowByKey(keyMany), r.rowByKey(keySeq), r.rowByKey(keyConc)
	def, best := r.rowByKey(keyDrainDefault), r.rowByKey(keyDrainBest)
	ce, cd := r.rowByKey(keyCeilEnqueue), r.rowByKey(keyCeilDrain)
	p1, p2 := r.rowByKey(keyProcs1), r.rowByKey(keyProcs2)
	var b20 base20
	if r.Base20 != nil {
		b20 = *r.Base20
	}

	ratio("Drain, default settings ÷ ceiling drain", goalDrainOfCeiling, def, cd, "ceiling drain", "drain,ceiling")
	ratio("`EnqueueMany` ÷ ceiling pipelined XADD", goalManyOfCeiling, many, ce, "ceiling enqueue", "many,ceiling")
	vsBase("Sequential `Enqueue` ÷ `redis-benchmark -c 1 -P 1` EVALSHA of a one-XADD script", goalSeqOfEvalsha, seq, b20.Evalsha, r.Base20 != nil, "EVALSHA -c 1", "seq,baseline")
	if seq != nil {
		atMost("Sequential `Enqueue`: Go CPU per call", goalSeqGoCPU, seq.GoCPUus, seq, "µs", "seq")
		atMost("Sequential `Enqueue`: Redis commands per call", goalSeqCmds, seq.Cmds, seq, "cmds", "seq")
	} else {
		need("Sequential `Enqueue`: Go CPU per call", fmt.Sprintf("≤ %.0f µs", goalSeqGoCPU), "seq")
		need("Sequential `Enqueue`: Redis commands per call", fmt.Sprintf("≤ %.0f cmds", goalSeqCmds), "seq")
	}
	ratio("`Enqueue` from 16 goroutines ÷ sequential `Enqueue`", goalConcOfSeq, conc, seq, "sequential", "seq,conc")
	vsBase("`EnqueueMany` ÷ `redis-benchmark -P 16` XADD", goalManyOfXaddP16, many, b20.XaddP16, r.Base20 != nil, "XADD -c 50 -P 16", "many,baseline")
	ratio("Drain, default settings ÷ best swept setting", goalDefaultOfBest, def, best, "best of the sweep", "drain")
	if def != nil {
		atMost("Redis CPU per drained no-op task, default settings and retention", goalDrainRedisCPU, def.RedisCPUus, def, "µs", "drain")
	} else {
		need("Redis CPU per drained no-op task, default settings and retention", fmt.Sprintf("≤ %.0f µs", goalDrainRedisCPU), "drain")
	}
	ratio("Drain, 2 worker processes ÷ 1 worker process", goalTwoProcs, p2, p1, "1 process", "procs")
	if p2 != nil {
		out[len(out)-1].Measured += fmt.Sprintf("; Redis busy %.0f%% of a core (1 process: %.0f%%)", 100*redisCores(p2), 100*redisCores(p1))
	}
	if b := r.Batch; b != nil && b.PlainRate > 0 {
		q := b.PartRate / b.PlainRate
		out = append(out, target20{What: fmt.Sprintf("Partitioned tasks ÷ the same tasks without keys (%s keys × %d)", thousands(float64(b.PartKeys)), b.PartPerKey),
			Goal: fmt.Sprintf("≥ %.2f×", goalPartitionOfPlain), Measured: thousands(b.PartRate) + "/s", Baseline: thousands(b.PlainRate) + "/s (without keys)",
			Ratio: fmt.Sprintf("%.2f", q), Met: met(q >= goalPartitionOfPlain)})
	} else {
		need("Partitioned tasks ÷ the same tasks without keys", fmt.Sprintf("≥ %.2f×", goalPartitionOfPlain), "partition")
	}
	if l := r.Latency; l != nil && l.Lat != nil {
		out = append(out, target20{What: "Enqueue → handler start at 1,000/s, p50", Goal: "≤ " + ms(latP50Target), Measured: ms(l.Lat.P50), Baseline: "—",
			Ratio: fmt.Sprintf("%.2f", float64(latP50Target)/float64(max(l.Lat.P50, 1))), Met: met(l.Lat.P50 <= latP50Target)})
		out = append(out, target20{What: "Enqueue → handler start at 1,000/s, p99", Goal: "≤ " + ms(latP99Target), Measured: ms(l.Lat.P99), Baseline: "—",
			Ratio: fmt.Sprintf("%.2f", float64(latP99Target)/float64(max(l.Lat.P99, 1))), Met: met(l.Lat.P99 <= latP99Target)})
	} else {
		need("Enqueue → handler start at 1,000/s, p50 and p99", "≤ 0.3 ms, ≤ 1 ms", "latency")
	}
	return out
}

// redisCores is how busy Redis was during x, in cores.
func redisCores(x *result) float64 {
	if x == nil {
		return 0
	}
	return x.RedisCPUus * x.Rate / 1e6
}

// markdown20 renders the issue 20 section: the ceiling, the baselines and
// the targets.
func (r *report) markdown20(p func(string, ...any)) {
	ts := r.targets20()
	if len(r.Ceiling) == 0 && r.Base20 == nil && r.rowByKey(keyDrainDefault) == nil && r.rowByKey(keyProcs1) == nil {
		return
	}
	p("### Targets at default settings (issue 20), same run\n\n")
	p("| Target | Goal | Measured | Baseline (same run) | Ratio | Met |\n|---|--:|--:|--:|--:|:-:|\n")
	for _, t := range ts {
		p("| %s | %s | %s | %s | %s | %s |\n", t.What, t.Goal, t.Measured, t.Baseline, t.Ratio, t.Met)
	}
	p("\nRatio ≥ 1.00 (for “at most” goals: goal ÷ measured) or ≥ the goal's factor means met. Every rate is the median of %d run(s); ", r.Sizes.Reps)
	p("the drain with default settings and the best swept setting run alternately, as do one and two worker processes, and the partitioned and plain tasks.\n\n")

	if len(r.Ceiling) > 0 {
		p("### Ceiling: a Redis-streams queue with no guarantees\n\n")
		p("| Side | Tasks/s | Redis CPU µs/task | Go CPU µs/task | Redis cmds/task | Other load | Settings |\n|---|--:|--:|--:|--:|--:|---|\n")
		for _, x := range r.Ceiling {
			p("| %s | %s | %.2f | %.2f | %.2f | %.2f | %s |\n", x.Label, thousands(x.Rate), x.RedisCPUus, x.GoCPUus, x.Cmds, x.Other, x.Settings)
		}
		p("\nMedian of %d run(s); all runs: ", r.Sizes.Reps)
		for i, x := range r.Ceiling {
			if i > 0 {
				p("; ")
			}
			p("%s %s", x.Label, fmtRates(x.Runs))
		}
		p(". No scripts, no fencing, no op marker, no counters: what any queue on Redis streams pays at least. ")
		p("Its entries hold one field `m` of %d bytes, the size of the msgpack envelope the bench's `Enqueue` rows write (read back from the stream at the start of the run; printable filler, not the envelope itself); ", r.CeilingPayload)
		p("each result record is `s\\n1\\n<ms>\\n<entry id>\\n\\x80`, about the size of the library's.\n\n")
	}
	if b := r.Base20; b != nil {
		p("### Baselines of the enqueue targets: redis-benchmark, same run\n\n")
		p("| Command | Requests/s (median) | Runs | Redis CPU µs/request | Other load |\n|---|--:|---|--:|--:|\n")
		for _, x := range []struct {
			b    baseline
			runs []float64
		}{{b.Evalsha, b.EvalRuns}, {b.XaddP16, b.XaddRuns}} {
			p("| `%s` | %s | %s | %.2f | %.2f |\n", x.b.Command, thousands(x.b.RPS), fmtRates(x.runs), x.b.RedisCPUus, x.b.Other)
		}
		p("\nThe payload is %d bytes of printable filler (redis-benchmark takes its arguments from the command line), the size of the tasks' envelope. ", b.Payload)
		p("The key carries a hash tag; the script is loaded with SCRIPT LOAD first.\n\n")
	}
}

// twoProcsNote explains the two-process rows.
func twoProcsNote(p func(string, ...any), p1, p2 *result) {
	if p1 == nil || p2 == nil {
		return
	}
	p("Worker processes: %s; Redis was busy %.0f%% of one core with 1 process and %.0f%% with 2 (Redis CPU ÷ wall time). ",
		p2.Settings, 100*redisCores(p1), 100*redisCores(p2))
	p("Both rows count the subprocesses' CPU as Go CPU and poll XINFO GROUPS every millisecond for the end (those calls are left out of the command counts, not of Redis CPU).\n\n")
}
