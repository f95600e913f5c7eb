package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// abMetric is one figure of a run that an A/B compares.
type abMetric struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Higher bool    `json:"higher"` // a higher value is better
}

// abMetrics lists the figures of a report that an A/B compares: the
// throughput rows' tasks/s, the latency percentiles, the task-semantics
// latencies, and the batch and partition rates.
func (r *report) abMetrics() []abMetric {
	var out []abMetric
	up := func(name string, v float64) {
		if v > 0 {
			out = append(out, abMetric{Name: name, Value: v, Higher: true})
		}
	}
	down := func(name string, d time.Duration) {
		if d > 0 {
			out = append(out, abMetric{Name: name, Value: float64(d) / float64(time.Millisecond)})
		}
	}
	for _, x := range r.Rows {
		up(x.Label+" (tasks/s)", x.Rate)
	}
	if l := r.Latency; l != nil && l.Lat != nil {
		down(l.Label+", p50 (ms)", l.Lat.P50)
		down(l.Label+", p99 (ms)", l.Lat.P99)
	}
	if c := r.Cont; c != nil && c.Sem != nil {
		down("Parent end → continuation start, p50 (ms)", c.Sem.Dist.P50)
		down("Parent end → continuation start, p99 (ms)", c.Sem.Dist.P99)
	}
	for _, c := range r.Cancel {
		if c.Sem != nil {
			down(cancelName(c)+", p99 (ms)", c.Sem.Dist.P99)
		}
	}
	if c := r.Chain; c != nil && c.Sem != nil && c.Sem.Links > 0 {
		down("Chain, per link (ms)", c.Sem.Total/time.Duration(c.Sem.Links))
	}
	if b := r.Batch; b != nil {
		up("Batch, AppendMany (items/s)", b.BatchMany)
		up("Single tasks, EnqueueMany in 500s (items/s)", b.SingleMany)
		up("Batch, Append from 16 goroutines (items/s)", b.BatchConc)
		up("Single tasks, Enqueue from 16 goroutines (items/s)", b.SingleConc)
		up("Partitioned tasks (tasks/s)", b.PartRate)
		up("The same tasks without keys (tasks/s)", b.PlainRate)
	}
	return out
}

// writeJSON writes the report's A/B figures to path.
func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r.abMetrics(), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// abDefaultPhases are the phases an A/B runs without --only: those whose
// figures depend on the library (not the baselines, the ceiling, the soak
// or the uploads, which take long or measure Redis and S3 alone).
var abDefaultPhases = []string{"many", "seq", "conc", "drain", "procs", "latency", "cont", "cancel", "chain", "batch", "partition"}

// runAB builds this tree's bench and the bench of the same cmd/bench
// sources on the library of rev (a git worktree of rev in a temporary
// directory, its cmd/bench replaced by this tree's), then runs the two in
// turn, rounds times each (order swapped every round), one run per
// measurement each time, on one Redis, and prints each figure's median of
// both sides and the change.
func runAB(o options, stdout, progress io.Writer) error {
	top, err := gitOut("", "rev-parse", "--show-toplevel")
	if err != nil {
		return fmt.Errorf("--ab-against needs to run inside the repository: %w", err)
	}
	sha, err := gitOut(top, "rev-parse", "--verify", o.abAgainst+"^{commit}")
	if err != nil {
		return fmt.Errorf("--ab-against %s: %w", o.abAgainst, err)
	}
	tmp, err := os.MkdirTemp("", "async-bench-ab-")
	if err != nil {
		return err
	}
	// What to undo, last first, at the end or on SIGINT/SIGTERM.
	var mu sync.Mutex
	var undo []func()
	cleanup := func() {
		mu.Lock()
		defer mu.Unlock()
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		undo = nil
	}
	later := func(f func()) {
		mu.Lock()
		defer mu.Unlock()
		undo = append(undo, f)
	}
	defer cleanup()
	later(func() { _ = os.RemoveAll(tmp) })
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if s, ok := <-sigs; ok {
			fmt.Fprintf(progress, "bench: %v, stopping\n", s)
			cleanup()
			os.Exit(130)
		}
	}()
	wt := filepath.Join(tmp, "tree")
	fmt.Fprintf(progress, "git worktree add %s %s\n", wt, sha[:12])
	if _, err := gitOut(top, "worktree", "add", "--detach", wt, sha); err != nil {
		return err
	}
	later(func() {
		if _, err := gitOut(top, "worktree", "remove", "--force", wt); err != nil {
			fmt.Fprintf(progress, "bench: git worktree remove %s: %v\n", wt, err)
		}
	})
	// The same measuring code on both sides: this tree's cmd/bench.
	olds, _ := filepath.Glob(filepath.Join(wt, "cmd", "bench", "*.go"))
	for _, f := range olds {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(wt, "cmd", "bench"), 0o755); err != nil {
		return err
	}
	srcs, _ := filepath.Glob(filepath.Join(top, "cmd", "bench", "*.go"))
	for _, f := range srcs {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(wt, "cmd", "bench", filepath.Base(f)), b, 0o644); err != nil {
			return err
		}
	}
	binA, binB := filepath.Join(tmp, "bench-this"), filepath.Join(tmp, "bench-"+sha[:12])
	for _, x := range []struct{ dir, out string }{{top, binA}, {wt, binB}} {
		fmt.Fprintf(progress, "go build -o %s ./cmd/bench (in %s)\n", x.out, x.dir)
		cmd := exec.Command("go", "build", "-o", x.out, "./cmd/bench")
		cmd.Dir = x.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build the bench in %s: %v: %s", x.dir, err, lastLines(string(out), 10))
		}
	}

	addr := o.redisAddr
	if addr == "" {
		srv, err := startServer()
		if err != nil {
			return err
		}
		later(srv.stop)
		addr = srv.addr
		fmt.Fprintf(progress, "redis-server pid %d on %s\n", srv.cmd.Process.Pid, addr)
	} else if !o.flush {
		return fmt.Errorf("--ab-against with --redis needs --flush (each run starts from an empty server)")
	}
	only := abDefaultPhases
	if o.only != nil {
		only = nil
		for _, p := range phases {
			if o.only[p] {
				only = append(only, p)
			}
		}
	}
	args := []string{"--redis", addr, "--flush", "--reps", "1", "--only", strings.Join(only, ","), "--settle", o.settle.String()}
	if o.quick {
		args = append(args, "--quick")
	}
	if o.sweep != "" {
		args = append(args, "--drain-sweep", o.sweep)
	}
	sides := []struct{ name, bin string }{{"this tree", binA}, {sha[:12], binB}}
	vals := [2]map[string][]float64{{}, {}}
	higher := map[string]bool{}
	var order []string
	for round := 0; round < o.abRounds; round++ {
		for k := 0; k < 2; k++ {
			i := (round + k) % 2 // swap the order every round
			js := filepath.Join(tmp, fmt.Sprintf("run-%d-%d.json", round, i))
			fmt.Fprintf(progress, "%s  A/B round %d of %d: %s\n", time.Now().Format("15:04:05"), round+1, o.abRounds, sides[i].name)
			cmd := exec.Command(sides[i].bin, append(append([]string(nil), args...), "--json", js)...)
			cmd.Stdout, cmd.Stderr = io.Discard, progress
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("%s: %w", sides[i].name, err)
			}
			b, err := os.ReadFile(js)
			if err != nil {
				return err
			}
			var ms []abMetric
			if err := json.Unmarshal(b, &ms); err != nil {
				return fmt.Errorf("%s: %w", js, err)
			}
			for _, m := range ms {
				if _, ok := higher[m.Name]; !ok {
					order = append(order, m.Name)
				}
				higher[m.Name] = m.Higher
				vals[i][m.Name] = append(vals[i][m.Name], m.Value)
			}
		}
	}

	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("### A/B: this tree against %s, same run\n\n", sha[:12])
	p("Both sides are this tree's cmd/bench, built on each side's library; %d rounds, each side once per round (order swapped every round), one run per measurement (`--reps 1`), phases %s, one Redis. Figures are medians of the rounds.\n\n",
		o.abRounds, strings.Join(only, ","))
	p("| Figure | This tree | %s | Change (+ is better) | Regressed by more than %.0f%% |\n|---|--:|--:|--:|:-:|\n", sha[:12], 100*goalABRegression)
	worst := math.Inf(1)
	for _, name := range order {
		a, bv := vals[0][name], vals[1][name]
		if len(a) == 0 || len(bv) == 0 {
			p("| %s | %s | %s | — | — |\n", name, fmtFigs(a), fmtFigs(bv))
			continue
		}
		ma, mb := medianF(a), medianF(bv)
		change := ma/mb - 1 // higher is better
		if !higher[name] {
			change = mb/ma - 1
		}
		worst = min(worst, change)
		p("| %s | %s | %s | %+.1f%% | %s |\n", name, fmtFig(ma), fmtFig(mb), 100*change, yesNo(change < -goalABRegression))
	}
	if math.IsInf(worst, 1) {
		worst = 0 // no figure on both sides
	}
	p("\nWorst change: %+.1f%%; target: no figure worse by more than %.0f%%: %s.\n\nRounds, this tree / %s:\n\n", 100*worst, 100*goalABRegression, met(worst >= -goalABRegression), sha[:12])
	for _, name := range order {
		p("- %s: %s / %s\n", name, fmtFigs(vals[0][name]), fmtFigs(vals[1][name]))
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}

func yesNo(bad bool) string {
	if bad {
		return "**yes**"
	}
	return "no"
}

func fmtFig(v float64) string {
	if v >= 100 {
		return thousands(v)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

func fmtFigs(vs []float64) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = fmtFig(v)
	}
	return strings.Join(out, ", ")
}

func gitOut(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, lastLines(string(out), 3))
	}
	return strings.TrimSpace(string(out)), nil
}
