package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/patterns"
)

// The read and control commands, on the inspector (package inspect) and
// the client.

var cmdQueues = &command{
	name: "queues", summary: "every queue: its tasks by state, totals, the last minute, paused",
	about: `Columns: waiting (in the stream, not read yet), running (leased), scheduled
(delayed), retrying (waiting out a backoff), held (parked by a limit or a rate,
waiting in a partition, held by InvokeAll), dead; processed and failed attempts
in total and over the last minute (fleet-wide, kept in Redis); paused.

A sharded queue is one row, the sums over its plain queue and its shards;
-shards adds a row for each of them under it, with its slot and, on a
cluster, its master. Give a shard's name (<queue>~<index>.<salt>) to tasks,
pause or retry-dead to act on that shard alone. With -json each sharded
queue carries its "shards".`,
	setup: func(e *cliEnv) func(context.Context, []string) error {
		watch := e.fs.Duration("watch", 0, "print the table again every `INTERVAL` (e.g. 2s) until interrupted")
		rate := e.fs.Bool("rate", false, "add the tasks/s workers read from each queue, measured over one second")
		shards := e.fs.Bool("shards", false, "list the shards of each sharded queue under it")
		return func(ctx context.Context, _ []string) error {
			if *watch < 0 {
				return usage("-watch %s: want a positive interval", *watch)
			}
			in, err := e.inspector()
			if err != nil {
				return err
			}
			if *watch == 0 {
				return cliQueues(ctx, e, in, *rate, *shards, false)
			}
			t := time.NewTicker(*watch)
			defer t.Stop()
			for {
				if err := cliQueues(ctx, e, in, *rate, *shards, true); err != nil {
					if ctx.Err() != nil {
						return nil // interrupted
					}
					return err
				}
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
			}
		}
	},
}

// queueRow is one queue of `worker queues`: the inspector's counts, and
// the rate with -rate.
type queueRow struct {
	inspect.QueueInfo
	Rate *float64 `json:"rate,omitempty"` // tasks/s read by workers over the sample
}

// queuesFrame is one table of `worker queues -watch -json`: one JSON
// object per line.
type queuesFrame struct {
	Time   time.Time  `json:"time"`
	Queues []queueRow `json:"queues"`
}

func cliQueues(ctx context.Context, e *cliEnv, in *inspect.Inspector, rate, shards, watching bool) error {
	read := func() ([]queueRow, map[string]int64, error) {
		rctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		qs, err := in.Queues(rctx)
		if err != nil {
			return nil, nil, err
		}
		rows := make([]queueRow, len(qs))
		reads := map[string]int64{}
		for i, q := range qs {
			rows[i] = queueRow{QueueInfo: q}
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
		select { // the sample: not a wait for a condition
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
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
	if watching && *e.json {
		return json.NewEncoder(e.stdout).Encode(queuesFrame{Time: time.Now().UTC(), Queues: list})
	}
	if watching {
		fmt.Fprintf(e.stdout, "%s\n", time.Now().UTC().Format(time.RFC3339))
	}
	err = e.emit(list, func(w io.Writer) {
		fmt.Fprint(w, "QUEUE\tWAITING\tRUNNING\tSCHEDULED\tRETRYING\tHELD\tDEAD\tPROCESSED\tSUCCEEDED\tFAILED\tPROCESSED/MIN\tFAILED/MIN\tPAUSED")
		if rate {
			fmt.Fprint(w, "\tRATE/S")
		}
		if shards {
			fmt.Fprint(w, "\tSHARD\tSLOT\tMASTER")
		}
		fmt.Fprintln(w)
		row := func(name string, q inspect.QueueInfo) {
			paused := "no"
			if q.Paused {
				paused = "yes"
			}
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s", name, q.Waiting, q.Running, q.Scheduled,
				q.Retrying, q.Held, q.Dead, q.Processed, q.Succeeded, q.Failed, q.ProcessedLastMinute, q.FailedLastMinute, paused)
		}
		for _, r := range list {
			row(r.Queue, r.QueueInfo)
			if r.Rate != nil {
				fmt.Fprintf(w, "\t%.1f", *r.Rate)
			} else if rate {
				fmt.Fprint(w, "\t-")
			}
			if shards {
				if n := shardCount(r.QueueInfo); n > 0 {
					fmt.Fprintf(w, "\t%d shards\t-\t-", n)
				} else {
					fmt.Fprint(w, "\t-\t-\t-")
				}
			}
			fmt.Fprintln(w)
			if !shards {
				continue
			}
			for _, s := range r.Shards {
				row("  "+s.Queue, s.QueueInfo)
				if rate {
					fmt.Fprint(w, "\t-")
				}
				idx, master := "plain", s.Master
				if s.Index >= 0 {
					idx = strconv.Itoa(s.Index)
				}
				if master == "" {
					master = "-"
				}
				fmt.Fprintf(w, "\t%s\t%d\t%s\n", idx, s.Slot, master)
			}
		}
	})
	if err == nil {
		// A queue Redis refused to read is listed with zeros; say why.
		for _, r := range list {
			if r.Error != "" {
				fmt.Fprintf(e.stderr, "worker: queues: %s: its counts could not be read: %s\n", r.Queue, r.Error)
			}
		}
	}
	if watching && err == nil {
		fmt.Fprintln(e.stdout)
	}
	return err
}

// shardCount is the number of shards of a sharded queue (its plain queue
// not counted), 0 for another.
func shardCount(q inspect.QueueInfo) int {
	n := 0
	for _, s := range q.Shards {
		if s.Index >= 0 {
			n++
		}
	}
	return n
}

// pageFlags are the flags of a listing of tasks.
type pageFlags struct {
	kind, cursor *string
	limit        *int
}

func addPageFlags(e *cliEnv) pageFlags {
	return pageFlags{
		kind:   e.fs.String("kind", "", "only tasks of this `KIND`"),
		limit:  e.fs.Int("limit", 50, "at most `N` tasks (up to 1000)"),
		cursor: e.fs.String("cursor", "", "start at `CURSOR`, the next page's cursor a previous listing printed"),
	}
}

// listTasks prints one page of queue's tasks in state.
func listTasks(ctx context.Context, e *cliEnv, queue string, state inspect.State, p pageFlags) error {
	if *p.limit < 1 || *p.limit > 1000 {
		return usage("-limit %d: want 1 to 1000", *p.limit)
	}
	in, err := e.inspector()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	page, err := in.Tasks(ctx, queue, inspect.ListOpts{State: state, Kind: *p.kind, Cursor: *p.cursor, Limit: *p.limit})
	if err != nil {
		return err
	}
	if page.Tasks == nil {
		page.Tasks = []inspect.TaskInfo{}
	}
	return e.emit(page, func(w io.Writer) {
		when := "NEXT"
		switch state {
		case inspect.StateRunning:
			when = "LEASED" // delivered or last heartbeat: Redis keeps no start
		case inspect.StateDead:
			when = "DIED"
		case inspect.StateWaiting:
			when = "ENQUEUED"
		}
		fmt.Fprintf(w, "ID\tKIND\tATTEMPT\t%s\tERROR\n", when)
		for _, t := range page.Tasks {
			at := t.NextRunAt
			switch state {
			case inspect.StateRunning:
				at = t.LeasedAt
			case inspect.StateDead:
				at = t.FinishedAt
			case inspect.StateWaiting:
				at = t.EnqueuedAt
			}
			msg := t.LastError
			if t.Why != "" {
				msg = strings.TrimSpace(t.Why + "; " + msg)
				msg = strings.TrimSuffix(msg, ";")
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.ID, orDash(t.Kind), attempts(t), fmtTime(at), oneLine(msg, 80))
		}
		if page.Next != "" {
			fmt.Fprintf(w, "\nmore: -cursor %s\n", page.Next)
		}
	})
}

func attempts(t inspect.TaskInfo) string {
	if t.MaxAttempts > 0 {
		return fmt.Sprintf("%d/%d", t.Attempt, t.MaxAttempts)
	}
	return strconv.Itoa(t.Attempt)
}

var cmdTasks = &command{
	name: "tasks", args: "QUEUE", min: 1, max: 1,
	summary: "a page of a queue's tasks in one state (-state, required)",
	about:   "States: waiting, running, scheduled, retrying, held, dead. A listing that has\nmore prints the cursor of the next page (-json: \"next\"). A sharded queue's\nname lists its plain queue's tasks, then each shard's; a shard's name\n(<queue>~<index>.<salt>) that shard's alone.",
	setup: func(e *cliEnv) func(context.Context, []string) error {
		state := e.fs.String("state", "", "the `STATE`: waiting, running, scheduled, retrying, held or dead")
		p := addPageFlags(e)
		return func(ctx context.Context, args []string) error {
			st, err := checkState(*state, listStates...)
			if err != nil {
				return err
			}
			return listTasks(ctx, e, args[0], st, p)
		}
	},
}

var cmdTaskShow = &command{
	name: "task show", args: "ID", min: 1, max: 1,
	summary: "one task: state, attempts, times, next retry, last error, why it waits, args, result, history",
	setup: func(e *cliEnv) func(context.Context, []string) error {
		return func(ctx context.Context, args []string) error { return cliTaskShow(ctx, e, args[0]) }
	},
}

var cmdTaskCancel = &command{
	name: "task cancel", args: "ID", min: 1, max: 1,
	summary: "cancel a task",
	setup: func(e *cliEnv) func(context.Context, []string) error {
		return func(ctx context.Context, args []string) error {
			c, err := e.client(ctx)
			if err != nil {
				return err
			}
			h, err := c.Task(args[0])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			st, err := h.Cancel(ctx)
			if err != nil {
				return err
			}
			return e.emit(map[string]string{"id": h.ID(), "state": string(st)}, func(w io.Writer) {
				fmt.Fprintf(w, "%s\t%s\n", h.ID(), st)
			})
		}
	},
}

// queueControl is queue pause and queue resume.
func queueControl(name, summary string, do func(*inspect.Inspector, context.Context, string) error, state string) *command {
	return &command{
		name: name, args: "QUEUE", min: 1, max: 1, summary: summary,
		setup: func(e *cliEnv) func(context.Context, []string) error {
			return func(ctx context.Context, args []string) error {
				in, err := e.inspector()
				if err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(ctx, callTimeout)
				defer cancel()
				if err := do(in, ctx, args[0]); err != nil {
					return err
				}
				return e.emit(map[string]string{"queue": args[0], "state": state}, func(w io.Writer) {
					fmt.Fprintf(w, "%s\t%s\n", args[0], state)
				})
			}
		},
	}
}

var (
	cmdQueuePause = queueControl("queue pause",
		"stop every worker fetching from a queue (within 1 s; enqueue still works, running tasks finish)",
		(*inspect.Inspector).Pause, "paused")
	cmdQueueResume = queueControl("queue resume", "undo queue pause", (*inspect.Inspector).Resume, "resumed")
)

var cmdQueueDelete = &command{
	name: "queue delete", args: "QUEUE", min: 1, max: 1,
	summary: "delete a queue and everything in it (refused while it holds tasks, unless -force)",
	about:   "Stop the workers that serve the queue first: a worker still serving it sets it up again.",
	setup: func(e *cliEnv) func(context.Context, []string) error {
		force := e.fs.Bool("force", false, "delete it even if it holds tasks")
		return func(ctx context.Context, args []string) error {
			in, err := e.inspector()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			if err := in.DeleteQueue(ctx, args[0], *force); err != nil {
				if errors.Is(err, inspect.ErrQueueNotEmpty) {
					return fmt.Errorf("%w (-force deletes it all the same)", err)
				}
				return err
			}
			return e.emit(map[string]string{"queue": args[0], "state": "deleted"}, func(w io.Writer) {
				fmt.Fprintf(w, "%s\tdeleted\n", args[0])
			})
		}
	},
}

var cmdDeadList = &command{
	name: "dead list", args: "QUEUE", min: 1, max: 1,
	summary: "a page of a queue's dead tasks (tasks QUEUE -state dead)",
	setup: func(e *cliEnv) func(context.Context, []string) error {
		p := addPageFlags(e)
		return func(ctx context.Context, args []string) error {
			return listTasks(ctx, e, args[0], inspect.StateDead, p)
		}
	},
}

// deadAll is dead retry-all and dead purge-all.
func deadAll(name, summary, done string, do func(*inspect.Inspector, context.Context, string, string) (int, error)) *command {
	return &command{
		name: name, args: "QUEUE", min: 1, max: 1, summary: summary,
		setup: func(e *cliEnv) func(context.Context, []string) error {
			kind := e.fs.String("kind", "", "only the dead tasks of this `KIND`")
			return func(ctx context.Context, args []string) error {
				in, err := e.inspector()
				if err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(ctx, callTimeout)
				defer cancel()
				n, err := do(in, ctx, args[0], *kind)
				if err != nil {
					return err
				}
				return e.emit(map[string]any{"queue": args[0], "kind": *kind, done: n}, func(w io.Writer) {
					fmt.Fprintf(w, "%s\t%d %s\n", args[0], n, done)
				})
			}
		},
	}
}

var (
	cmdDeadRetryAll = deadAll("dead retry-all", "put every dead task of a queue (-kind: of one kind) back into it",
		"retried", (*inspect.Inspector).RetryDead)
	cmdDeadPurgeAll = deadAll("dead purge-all", "delete every dead task of a queue (-kind: of one kind)",
		"purged", (*inspect.Inspector).PurgeDead)
)

var cmdDeadRetry = &command{
	name: "dead retry", args: "ID", min: 1, max: 1,
	summary: "put one dead task back into its queue",
	setup: func(e *cliEnv) func(context.Context, []string) error {
		return func(ctx context.Context, args []string) error {
			c, err := e.client(ctx)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			h, err := c.RetryDead(ctx, args[0])
			if err != nil {
				return err
			}
			return e.emit(map[string]string{"id": h.ID(), "state": "pending"}, func(w io.Writer) { fmt.Fprintf(w, "%s\tretried\n", h.ID()) })
		}
	},
}

var cmdDeadPurge = &command{
	name: "dead purge", args: "ID", min: 1, max: 1,
	summary: "delete one dead task",
	setup: func(e *cliEnv) func(context.Context, []string) error {
		return func(ctx context.Context, args []string) error {
			c, err := e.client(ctx)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			if err := c.PurgeDead(ctx, args[0]); err != nil {
				return err
			}
			return e.emit(map[string]string{"id": args[0], "state": "purged"}, func(w io.Writer) { fmt.Fprintf(w, "%s\tpurged\n", args[0]) })
		}
	},
}

// printList reads one list from the inspector within callTimeout and prints it:
// with -json as a JSON array ([] when empty), else as a table of header
// and a line per item, written by row.
func printList[T any](ctx context.Context, e *cliEnv, fetch func(*inspect.Inspector, context.Context) ([]T, error),
	header string, row func(w io.Writer, item T)) error {
	in, err := e.inspector()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	items, err := fetch(in, ctx)
	if err != nil {
		return err
	}
	if items == nil {
		items = []T{}
	}
	return e.emit(items, func(w io.Writer) {
		fmt.Fprintln(w, header)
		for _, it := range items {
			row(w, it)
		}
	})
}

var cmdWorkers = &command{
	name: "workers", summary: "the live workers: host, pid, queues, concurrency, running now, heartbeat",
	setup: func(e *cliEnv) func(context.Context, []string) error {
		return func(ctx context.Context, _ []string) error {
			return printList(ctx, e, (*inspect.Inspector).Workers,
				"NAME\tHOST\tPID\tQUEUES\tCONCURRENCY\tRUNNING\tPAUSED\tSTARTED\tHEARTBEAT",
				func(w io.Writer, wi inspect.WorkerInfo) {
					qs := make([]string, 0, len(wi.Queues))
					for _, q := range sortedKeys(wi.Queues) {
						qs = append(qs, fmt.Sprintf("%s=%d", q, wi.Queues[q]))
					}
					fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%d\t%d\t%s\t%s\t%s\n", wi.Name, wi.Host, wi.PID, strings.Join(qs, ","),
						wi.Concurrency, wi.Running, orDash(strings.Join(wi.Paused, ",")), fmtTime(wi.Started), fmtTime(wi.LastHeartbeat))
				})
		}
	},
}

var cmdGroups = &command{
	name: "groups", summary: "ForkJoin and InvokeAll groups with their progress, newest first",
	setup: func(e *cliEnv) func(context.Context, []string) error {
		queue := e.fs.String("queue", "", "only the groups homed in `QUEUE`")
		return func(ctx context.Context, _ []string) error {
			groups := func(in *inspect.Inspector, ctx context.Context) ([]inspect.GroupInfo, error) {
				return in.Groups(ctx, *queue)
			}
			return printList(ctx, e, groups, "ID\tSTATE\tMEMBERS\tSUCCEEDED\tFAILED\tCANCELLED\tRUNNING\tHELD\tCREATED\tWORK",
				func(w io.Writer, g inspect.GroupInfo) {
					work := "-"
					switch {
					case g.WorkError != "":
						work = "unreadable: " + oneLine(g.WorkError, 60)
					case g.WorkDone > 0 || g.WorkTotal > 0:
						work = fmtWork(g.WorkDone, g.WorkTotal)
					}
					fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", g.ID, g.State, g.Members, g.Succeeded, g.Failed,
						g.Cancelled, g.Running, g.Held, fmtTime(g.Created), work)
				})
		}
	},
}

var cmdGroup = &command{
	name: "group", args: "ID", min: 1, max: 1,
	summary: "one group's progress, members and work reported (-watch: live bars until it ends)",
	setup: func(e *cliEnv) func(context.Context, []string) error {
		watch := e.fs.Bool("watch", false, "a live progress bar until the group ends")
		return func(ctx context.Context, args []string) error {
			c, err := e.client(ctx)
			if err != nil {
				return err
			}
			return cliGroup(ctx, e, c, args[0], *watch)
		}
	},
}

// watchDrew, when set (by a test), is told of each reading that group
// -watch drew while the group ran: its bars are not written out until the
// end when the output is not a terminal.
var watchDrew func(patterns.Progress)

func cliGroup(ctx context.Context, e *cliEnv, c *client.Client, id string, watch bool) error {
	g, err := patterns.Open(c, id)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, callTimeout)
	p, err := g.Progress(rctx)
	cancel()
	if err != nil {
		return err
	}
	show := func(p patterns.Progress) error {
		return e.emit(map[string]any{"id": g.ID(), "state": p.State, "members": p.Total, "succeeded": p.Succeeded, "failed": p.Failed,
			"work_done": p.WorkDone, "work_total": p.WorkTotal}, func(w io.Writer) {
			fmt.Fprintf(w, "%s\t%s\t%d/%d done\t%d succeeded\t%d failed", g.ID(), p.State, p.Done(), p.Total, p.Succeeded, p.Failed)
			if p.WorkDone > 0 || p.WorkTotal > 0 {
				fmt.Fprintf(w, "\t%s", fmtWork(p.WorkDone, p.WorkTotal))
			}
			fmt.Fprintln(w)
		})
	}
	if !watch || p.Ended() || *e.json {
		return show(p)
	}
	bar := mpb.New(mpb.WithOutput(e.stdout), mpb.WithWidth(50))
	b := bar.AddBar(int64(p.Total), mpb.PrependDecorators(decor.Name(id+" "), decor.CountersNoUnit("%d/%d")),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.Elapsed(decor.ET_STYLE_GO, decor.WCSyncSpace)))
	// The work the members reported (bytes, for uploads): a second bar
	// once any member reported, its total growing as members report theirs.
	var work *mpb.Bar
	setWork := func(p patterns.Progress) {
		if p.WorkDone == 0 && p.WorkTotal == 0 {
			return
		}
		if work == nil {
			work = bar.AddBar(0, mpb.PrependDecorators(decor.Name("work "), decor.Counters(decor.SizeB1024(0), "% .1f / % .1f")),
				mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace)))
		}
		work.SetTotal(max(p.WorkTotal, p.WorkDone), false)
		work.SetCurrent(p.WorkDone)
	}
	abort := func() {
		b.Abort(false)
		if work != nil {
			work.Abort(false)
		}
		bar.Wait()
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for !p.Ended() {
		b.SetCurrent(int64(p.Done()))
		setWork(p)
		if watchDrew != nil {
			watchDrew(p)
		}
		select {
		case <-ctx.Done():
			abort()
			return ctx.Err()
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		p, err = g.Progress(rctx)
		cancel()
		if err != nil {
			abort()
			return err
		}
	}
	b.SetTotal(int64(p.Total), true)
	setWork(p)
	if work != nil {
		work.SetTotal(max(p.WorkTotal, p.WorkDone), true)
	}
	bar.Wait()
	return show(p)
}

func repeatsList(e *cliEnv) func(context.Context, []string) error {
	return func(ctx context.Context, _ []string) error {
		return printList(ctx, e, (*inspect.Inspector).Repeats, "NAME\tQUEUE\tKIND\tSCHEDULE\tNEXT\tLAST\tLAST TASK",
			func(w io.Writer, r inspect.RepeatInfo) {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Queue, r.Kind, r.Schedule, fmtTime(r.NextFire),
					fmtTime(r.LastFire), orDash(r.LastTask))
			})
	}
}

var (
	cmdRepeats = &command{
		name: "repeats", summary: "the repeat schedules, with their next and last fire",
		setup: repeatsList,
	}
	cmdRepeatsList = &command{
		name: "repeats list", summary: "the same as worker repeats",
		setup: repeatsList,
	}
)

var cmdRepeatsRemove = &command{
	name: "repeats remove", args: "NAME", min: 1, max: 1,
	summary: "remove a repeat schedule",
	setup: func(e *cliEnv) func(context.Context, []string) error {
		return func(ctx context.Context, args []string) error {
			c, err := e.client(ctx)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			ok, err := patterns.RemoveRepeat(ctx, c, args[0])
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("no repeat schedule %q", args[0])
			}
			return e.emit(map[string]string{"name": args[0], "state": "removed"}, func(w io.Writer) { fmt.Fprintf(w, "%s\tremoved\n", args[0]) })
		}
	},
}

// cliTaskShow prints one task as the inspector sees it. The args and the
// result are read again through the client and shown as JSON by the JSON
// rule of docs/wire.md (codec.ToJSON, which checks them with the codec gate
// first), as the dashboard and the HTTP API show them: object keys in the
// order they were encoded, binary as {"$bytes": ...}. Bytes the gate
// refuses, or that JSON cannot spell, are shown by size, with the reason,
// and make the command fail after it printed the rest.
func cliTaskShow(ctx context.Context, e *cliEnv, id string) error {
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	h, err := c.Task(id)
	if err != nil {
		return err
	}
	in, err := e.inspector()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	ti, tiErr := in.Task(ctx, h.ID())
	info, infoErr := h.Info(ctx)
	var bad []string
	out := map[string]any{}
	switch {
	case tiErr == nil && ti.State != inspect.StateUnknown:
		b, err := json.Marshal(ti)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &out); err != nil {
			return err
		}
		// As the inspector wrote them: a map would sort their keys.
		if len(ti.Args) > 0 {
			out["args"] = ti.Args
		}
		if len(ti.Result) > 0 {
			out["result"] = ti.Result
		}
	case infoErr != nil:
		if tiErr != nil {
			return tiErr
		}
		return infoErr
	default:
		// The inspector could not read it: what the client reads.
		if tiErr != nil {
			bad = append(bad, tiErr.Error())
		}
		out["id"], out["queue"], out["state"], out["attempt"] = info.ID, info.Queue, string(info.State), info.Attempt
		if info.Kind != "" {
			out["kind"], out["max_attempts"] = info.Kind, info.MaxAttempts
		}
		if info.LastError != "" {
			out["last_error"] = info.LastError
		}
		if !info.FinishedAt.IsZero() {
			out["finished_at"] = info.FinishedAt.UTC().Format(time.RFC3339Nano)
		}
	}
	if infoErr == nil {
		show := func(name string, b []byte) {
			if len(b) == 0 {
				return
			}
			j, err := codec.ToJSON(nil, b)
			if err != nil {
				delete(out, name)
				out[name+"_bytes"] = len(b)
				out[name+"_error"] = err.Error()
				what := "decode"
				if !errors.Is(err, codec.ErrMalformed) {
					what = "show as JSON"
				}
				bad = append(bad, fmt.Sprintf("cannot %s its %s (%d bytes): %v", what, name, len(b), err))
				return
			}
			out[name] = json.RawMessage(j)
		}
		show("result", info.Result)
		show("args", info.Payload)
	}
	if err := e.emit(out, func(w io.Writer) { printTask(w, out) }); err != nil {
		return err
	}
	if len(bad) > 0 {
		return fmt.Errorf("task %s: %s", h.ID(), strings.Join(bad, "; "))
	}
	return nil
}

// taskOrder is the order task show prints a task's fields in; others
// follow, sorted.
var taskOrder = []string{"id", "queue", "kind", "state", "why", "attempt", "max_attempts", "progress", "enqueued_at", "started_at",
	"finished_at", "next_run_at", "last_error", "args", "args_bytes", "args_error", "result", "result_bytes", "result_error",
	"meta", "group", "parent", "partition_key", "rate_key"}

func printTask(w io.Writer, out map[string]any) {
	keys := append([]string{}, taskOrder...)
	for _, k := range sortedKeys(out) {
		if !contains(keys, k) && k != "history" {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		v, ok := out[k]
		if !ok {
			continue
		}
		var s string
		if k == "progress" {
			if p, ok := progressField(v); ok {
				fmt.Fprintf(w, "%s\t%s\n", k, fmtProgress(p, time.Now()))
				continue
			}
		}
		switch t := v.(type) {
		case string:
			s = t
			if k == "next_run_at" {
				if tm, err := time.Parse(time.RFC3339Nano, t); err == nil {
					s = fmtDue(tm)
				}
			}
		default:
			b, _ := json.Marshal(v)
			s = string(bytes.TrimSpace(b))
		}
		fmt.Fprintf(w, "%s\t%s\n", k, s)
	}
	hs, _ := out["history"].([]any)
	if len(hs) == 0 {
		return
	}
	fmt.Fprintln(w, "\nhistory:")
	fmt.Fprintln(w, "  ATTEMPT\tSTARTED\tFINISHED\tWORKER\tERROR")
	for _, h := range hs {
		m, _ := h.(map[string]any)
		str := func(k string) string { s, _ := m[k].(string); return s }
		n, _ := m["attempt"].(float64)
		fmt.Fprintf(w, "  %d\t%s\t%s\t%s\t%s\n", int(n), orDash(str("started_at")), orDash(str("finished_at")),
			orDash(str("worker")), oneLine(str("error"), 80))
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
