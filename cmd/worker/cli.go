package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/patterns"
)

// The operator commands: subcommands of the same binary.
var cliCommands = map[string]bool{"queues": true, "task": true, "group": true, "dead": true, "repeats": true, "enqueue": true}

const cliUsage = `operator commands (each takes -redis URL, default $REDIS_URL; -json on reads):
  worker queues [-rate]                  queues: waiting, running, scheduled, dead (-rate: tasks/s over 1s)
  worker task show ID                    a task's state, attempt, result or error
  worker task cancel ID                  cancel a task
  worker group ID [-watch]               a group's progress (-watch: a live bar until it ends)
  worker dead list QUEUE [-n N]          dead letters, newest first
  worker dead retry ID                   run a dead task again
  worker dead purge ID                   delete a dead task
  worker repeats list                    repeat schedules
  worker repeats remove NAME             remove a repeat schedule
  worker enqueue -kind K [-queue Q] [-id ID] [-delay D] [-partition P] JSON
                                         enqueue a task with JSON args
`

// runCLI runs an operator command and returns the exit code.
func runCLI(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	err := cli(args, stdout, stderr, getenv)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "worker:", err)
		fmt.Fprint(stderr, cliUsage)
		return 2
	}
	fmt.Fprintln(stderr, "worker:", err)
	return 1
}

var errUsage = errors.New("usage")

func usage(format string, a ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), errUsage)
}

type cliEnv struct {
	fs     *flag.FlagSet
	redis  *string
	json   *bool
	stdout io.Writer
}

func newCLIEnv(name string, stdout, stderr io.Writer, getenv func(string) string) *cliEnv {
	fs := flag.NewFlagSet("worker "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := getenv("REDIS_URL")
	if def == "" {
		def = "redis://127.0.0.1:6379/0"
	}
	return &cliEnv{fs: fs, stdout: stdout,
		redis: fs.String("redis", def, "Redis `URL` (env REDIS_URL)"),
		json:  fs.Bool("json", false, "print JSON")}
}

func (e *cliEnv) connect() (*client.Client, redis.UniversalClient, error) {
	opts, err := redis.ParseURL(*e.redis)
	if err != nil {
		return nil, nil, fmt.Errorf("-redis: %w", err)
	}
	opts.ContextTimeoutEnabled = true // deadlines bound socket reads
	rdb := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.New(ctx, rdb, nil)
	if err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	return c, rdb, nil
}

// emit prints v as JSON with -json, else calls text.
func (e *cliEnv) emit(v any, text func(w io.Writer)) error {
	if *e.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	text(tw)
	return tw.Flush()
}

func cli(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	cmd, rest := args[0], args[1:]
	sub := ""
	if cmd == "task" || cmd == "dead" || cmd == "repeats" {
		if len(rest) == 0 {
			return usage("worker %s needs a subcommand", cmd)
		}
		sub, rest = rest[0], rest[1:]
	}
	e := newCLIEnv(strings.TrimSpace(cmd+" "+sub), stdout, stderr, getenv)
	var (
		rate      = e.fs.Bool("rate", false, "queues: measure tasks/s over one second")
		watch     = e.fs.Bool("watch", false, "group: a live progress bar until the group ends")
		n         = e.fs.Int("n", 20, "dead list: how many")
		kind      = e.fs.String("kind", "", "enqueue: the task's kind")
		queue     = e.fs.String("queue", "", "enqueue: the queue (default: the client's default queue)")
		id        = e.fs.String("id", "", "enqueue: the task's id (idempotent)")
		delay     = e.fs.Duration("delay", 0, "enqueue: run after this long")
		partition = e.fs.String("partition", "", "enqueue: partition key")
	)
	// Flags may come after the arguments too ("task show ID -json").
	var pos []string
	for {
		if err := e.fs.Parse(rest); err != nil {
			return err
		}
		rest = e.fs.Args()
		if len(rest) == 0 {
			break
		}
		pos, rest = append(pos, rest[0]), rest[1:]
	}
	want := func(k int, what string) error {
		if len(pos) != k {
			return usage("worker %s %s takes %s", cmd, sub, what)
		}
		return nil
	}
	// Each command and the number of arguments it takes, checked before
	// anything connects.
	arity := map[string]int{"queues ": 0, "task show": 1, "task cancel": 1, "group ": 1, "dead list": 1,
		"dead retry": 1, "dead purge": 1, "repeats list": 0, "repeats remove": 1, "enqueue ": 1}
	k, ok := arity[cmd+" "+sub]
	if !ok {
		return usage("unknown command %q", strings.TrimSpace(cmd+" "+sub))
	}
	if len(pos) != k {
		return usage("worker %s takes %d argument(s), got %d", strings.TrimSpace(cmd+" "+sub), k, len(pos))
	}
	c, rdb, err := e.connect()
	if err != nil {
		return err
	}
	defer rdb.Close()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	switch cmd + " " + sub {
	case "queues ":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		return cliQueues(ctx, e, inspect.New(rdb), *rate)
	case "task show":
		if err := want(1, "a task id"); err != nil {
			return err
		}
		return cliTaskShow(ctx, e, c, pos[0])
	case "task cancel":
		if err := want(1, "a task id"); err != nil {
			return err
		}
		h, err := c.Task(pos[0])
		if err != nil {
			return err
		}
		st, err := h.Cancel(ctx)
		if err != nil {
			return err
		}
		return e.emit(map[string]string{"id": h.ID(), "state": string(st)}, func(w io.Writer) {
			fmt.Fprintf(w, "%s\t%s\n", h.ID(), st)
		})
	case "group ":
		if err := want(1, "a group id (group:<queue>/<id>)"); err != nil {
			return err
		}
		return cliGroup(e, c, pos[0], *watch)
	case "dead list":
		if err := want(1, "a queue"); err != nil {
			return err
		}
		ds, err := c.DeadTasks(ctx, pos[0], 0, *n)
		if err != nil {
			return err
		}
		type row struct {
			ID, Kind, Error string
			Attempt         int
			Died            time.Time
		}
		rows := make([]row, len(ds))
		for i, d := range ds {
			rows[i] = row{ID: d.ID, Kind: d.Kind, Error: d.Error, Attempt: d.Attempt, Died: d.DiedAt}
		}
		return e.emit(rows, func(w io.Writer) {
			fmt.Fprintln(w, "ID\tKIND\tATTEMPT\tDIED\tERROR")
			for _, r := range rows {
				fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%.80s\n", r.ID, r.Kind, r.Attempt, r.Died.Format(time.RFC3339), r.Error)
			}
		})
	case "dead retry":
		if err := want(1, "a task id"); err != nil {
			return err
		}
		h, err := c.RetryDead(ctx, pos[0])
		if err != nil {
			return err
		}
		return e.emit(map[string]string{"id": h.ID(), "state": "pending"}, func(w io.Writer) { fmt.Fprintf(w, "%s\tretried\n", h.ID()) })
	case "dead purge":
		if err := want(1, "a task id"); err != nil {
			return err
		}
		if err := c.PurgeDead(ctx, pos[0]); err != nil {
			return err
		}
		return e.emit(map[string]string{"id": pos[0], "state": "purged"}, func(w io.Writer) { fmt.Fprintf(w, "%s\tpurged\n", pos[0]) })
	case "repeats list":
		if err := want(0, "no arguments"); err != nil {
			return err
		}
		rs, err := patterns.Repeats(ctx, c)
		if err != nil {
			return err
		}
		return e.emit(rs, func(w io.Writer) {
			fmt.Fprintln(w, "NAME\tQUEUE\tKIND\tSCHEDULE\tNEXT\tFIRED\tLAST")
			for _, r := range rs {
				sched := r.Every.String()
				if r.Cron != "" {
					sched = strings.TrimSpace(r.Cron + " " + r.TZ)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Name, r.Queue, r.Kind, sched, r.Next.Format(time.RFC3339), r.Fired, r.Last)
			}
		})
	case "repeats remove":
		if err := want(1, "a schedule name"); err != nil {
			return err
		}
		ok, err := patterns.RemoveRepeat(ctx, c, pos[0])
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("no repeat schedule %q", pos[0])
		}
		return e.emit(map[string]string{"name": pos[0], "state": "removed"}, func(w io.Writer) { fmt.Fprintf(w, "%s\tremoved\n", pos[0]) })
	case "enqueue ":
		if err := want(1, "the args as one JSON value"); err != nil {
			return err
		}
		if *kind == "" {
			return usage("worker enqueue needs -kind")
		}
		v, err := decodeJSONArgs(pos[0])
		if err != nil {
			return err
		}
		h, err := c.Enqueue(ctx, jsonArgs{kind: *kind, v: v}, &client.EnqueueOpts{Queue: *queue, ID: *id, Delay: *delay, PartitionKey: *partition})
		if err != nil {
			return err
		}
		return e.emit(map[string]any{"id": h.ID(), "duplicate": h.Duplicate()}, func(w io.Writer) {
			fmt.Fprintf(w, "%s\n", h.ID())
		})
	}
	return usage("unknown command %q", strings.TrimSpace(cmd+" "+sub))
}

// jsonArgs are args given as JSON on the command line, sent as msgpack.
type jsonArgs struct {
	kind string
	v    any
}

func (a jsonArgs) Kind() string { return a.kind }

// EncodeMsgpack encodes the decoded JSON value.
func (a jsonArgs) EncodeMsgpack(enc *msgpack.Encoder) error { return enc.Encode(a.v) }

// decodeJSONArgs decodes s, keeping whole numbers whole (so that a
// handler's int fields decode them).
func decodeJSONArgs(s string) (any, error) {
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("args %.60q: not JSON: %w", s, err)
	}
	if d.More() {
		return nil, fmt.Errorf("args %.60q: more than one JSON value", s)
	}
	var fix func(any) any
	fix = func(x any) any {
		switch t := x.(type) {
		case json.Number:
			if i, err := t.Int64(); err == nil {
				return i
			}
			f, _ := t.Float64()
			return f
		case map[string]any:
			for k, e := range t {
				t[k] = fix(e)
			}
		case []any:
			for i, e := range t {
				t[i] = fix(e)
			}
		}
		return x
	}
	return fix(v), nil
}

func cliTaskShow(ctx context.Context, e *cliEnv, c *client.Client, id string) error {
	h, err := c.Task(id)
	if err != nil {
		return err
	}
	in, err := h.Info(ctx)
	if err != nil {
		return err
	}
	out := map[string]any{"id": h.ID(), "state": in.State, "attempt": in.Attempt}
	if in.Kind != "" {
		out["kind"] = in.Kind
	}
	if in.LastError != "" {
		out["error"] = in.LastError
	}
	if !in.FinishedAt.IsZero() {
		out["finished"] = in.FinishedAt.Format(time.RFC3339Nano)
	}
	// The result and the args are bytes read from Redis: they go through
	// the gate, and ones it refuses are shown by size, with the reason, and
	// make the command fail after it printed the rest.
	var bad []string
	show := func(name string, b []byte) {
		if len(b) == 0 {
			return
		}
		v, err := inspect.Decode(b)
		if err != nil {
			out[name+"_bytes"] = len(b)
			out[name+"_error"] = err.Error()
			bad = append(bad, fmt.Sprintf("%s (%d bytes): %v", name, len(b), err))
			return
		}
		out[name] = v
	}
	show("result", in.Result)
	show("args", in.Payload)
	if err := e.emit(out, func(w io.Writer) {
		ks := make([]string, 0, len(out))
		for k := range out {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		for _, k := range ks {
			b, _ := json.Marshal(out[k])
			if s, ok := out[k].(string); ok {
				b = []byte(s)
			}
			fmt.Fprintf(w, "%s\t%s\n", k, bytes.TrimSpace(b))
		}
	}); err != nil {
		return err
	}
	if len(bad) > 0 {
		return fmt.Errorf("task %s: cannot decode its %s", h.ID(), strings.Join(bad, "; its "))
	}
	return nil
}

// queueRow is one line of `worker queues`.
type queueRow struct {
	Queue     string   `json:"queue"`
	Waiting   int64    `json:"waiting"`   // in the stream, not yet read by a worker
	Running   int64    `json:"running"`   // read by a worker, no outcome yet
	Scheduled int64    `json:"scheduled"` // delayed, retrying, parked
	Dead      int64    `json:"dead"`
	Rate      *float64 `json:"rate,omitempty"` // tasks/s read by workers over the sample
}

func cliQueues(ctx context.Context, e *cliEnv, in *inspect.Inspector, rate bool) error {
	read := func() ([]queueRow, map[string]int64, error) {
		qs, err := in.Queues(ctx)
		if err != nil {
			return nil, nil, err
		}
		rows := make([]queueRow, len(qs))
		reads := map[string]int64{}
		for i, q := range qs {
			rows[i] = queueRow{Queue: q.Queue, Waiting: q.Waiting, Running: q.Running, Scheduled: q.Scheduled, Dead: q.Dead}
			if q.Read >= 0 {
				reads[q.Queue] = q.Read
			}
		}
		return rows, reads, nil
	}
	list, before, err := read()
	if err != nil {
		return err
	}
	if rate {
		t0 := time.Now()
		time.Sleep(time.Second) // the sample: not a wait for a condition
		var after map[string]int64
		if list, after, err = read(); err != nil {
			return err
		}
		// A queue whose read counter Redis cannot give at either end of the
		// sample has no rate.
		for i, r := range list {
			b, ok1 := before[r.Queue]
			a, ok2 := after[r.Queue]
			if ok1 && ok2 {
				v := float64(a-b) / time.Since(t0).Seconds()
				list[i].Rate = &v
			}
		}
	}
	return e.emit(list, func(w io.Writer) {
		fmt.Fprint(w, "QUEUE\tWAITING\tRUNNING\tSCHEDULED\tDEAD")
		if rate {
			fmt.Fprint(w, "\tRATE/S")
		}
		fmt.Fprintln(w)
		for _, r := range list {
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d", r.Queue, r.Waiting, r.Running, r.Scheduled, r.Dead)
			if r.Rate != nil {
				fmt.Fprintf(w, "\t%.1f", *r.Rate)
			} else if rate {
				fmt.Fprint(w, "\t-")
			}
			fmt.Fprintln(w)
		}
	})
}

func cliGroup(e *cliEnv, c *client.Client, id string, watch bool) error {
	g, err := patterns.Open(c, id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := g.Progress(ctx)
	if err != nil {
		return err
	}
	show := func(p patterns.Progress) error {
		return e.emit(map[string]any{"id": g.ID(), "state": p.State, "members": p.Total, "succeeded": p.Succeeded, "failed": p.Failed}, func(w io.Writer) {
			fmt.Fprintf(w, "%s\t%s\t%d/%d done\t%d succeeded\t%d failed\n", g.ID(), p.State, p.Done(), p.Total, p.Succeeded, p.Failed)
		})
	}
	if !watch || p.Ended() || *e.json {
		return show(p)
	}
	wctx, stop := signalContext()
	defer stop()
	bar := mpb.New(mpb.WithOutput(e.stdout), mpb.WithWidth(50))
	b := bar.AddBar(int64(p.Total), mpb.PrependDecorators(decor.Name(id+" "), decor.CountersNoUnit("%d/%d")),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.Elapsed(decor.ET_STYLE_GO, decor.WCSyncSpace)))
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for !p.Ended() {
		b.SetCurrent(int64(p.Done()))
		select {
		case <-wctx.Done():
			b.Abort(false)
			bar.Wait()
			return wctx.Err()
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(wctx, 5*time.Second)
		p, err = g.Progress(rctx)
		cancel()
		if err != nil {
			b.Abort(false)
			bar.Wait()
			return err
		}
	}
	b.SetTotal(int64(p.Total), true)
	bar.Wait()
	return show(p)
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}
