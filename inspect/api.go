package inspect

// The contract of issue 15's inspector. The types and signatures below are
// shared by the helpers that implement them (queues and counts; tasks,
// control and fleet) and by their users (cmd/worker, metrics). Bodies that
// still answer errNotYet are filled in on the implementers' branches.

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"time"
)

var errNotYet = errors.New("inspect: not implemented yet")

// State is where a task is in its life.
type State string

// The states a task can be listed by (Tasks, CancelAll), and the ended ones
// a single task can be in (Task).
const (
	StateWaiting   State = "waiting"   // in its queue's stream, not read by a worker yet
	StateRunning   State = "running"   // leased by a worker, no outcome yet
	StateScheduled State = "scheduled" // delayed to a due time (EnqueueOpts.Delay/ProcessAt)
	StateRetrying  State = "retrying"  // waiting out a retry backoff after a failed attempt
	StateHeld      State = "held"      // parked by a limit or a rate, waiting in a partition, or held by an InvokeAll
	StateDead      State = "dead"      // in the dead-letter store
	StateSucceeded State = "succeeded" // ended (Task only)
	StateCancelled State = "cancelled" // ended (Task only)
	StateUnknown   State = "unknown"   // not found, or its records expired (Task only)
)

// MinuteStat is what the fleet processed in one queue in one minute (Redis
// time), from the counters the completion scripts keep.
type MinuteStat struct {
	Minute    time.Time `json:"minute"`
	Processed int64     `json:"processed"`
	Failed    int64     `json:"failed"`
}

// ListOpts selects a page of one queue's tasks in one state.
type ListOpts struct {
	State State // required
	// Kind, when set, keeps only tasks of that kind (filtered on the page
	// read, so a page may hold fewer than Limit tasks; Next still pages on).
	Kind string
	// Cursor is TaskPage.Next of the previous page; "" starts at the
	// beginning (the oldest, or the soonest due).
	Cursor string
	// Limit is the most tasks on the page; 0 means 50, at most 1000.
	Limit int
}

// TaskPage is one page of Tasks.
type TaskPage struct {
	Tasks []TaskInfo `json:"tasks"`
	Next  string     `json:"next,omitempty"` // "" on the last page
}

// TaskInfo is one task as an operator sees it. Times are Redis time, zero
// when not known.
type TaskInfo struct {
	ID          string `json:"id"`
	Queue       string `json:"queue"`
	Kind        string `json:"kind"`
	State       State  `json:"state"`
	Attempt     int    `json:"attempt"`
	MaxAttempts int    `json:"max_attempts"`
	// EnqueuedAt is when the task was enqueued (its envelope's time, or
	// else its first entry's), in every state.
	EnqueuedAt time.Time `json:"enqueued_at,omitzero"`
	// StartedAt is, for a retrying task, when its last attempt (the one
	// that failed) started; for a dead one, when the attempt that ended it
	// started, if a handler ran it (zero for a task dead-lettered before
	// any run: malformed, poison, too large). Both come from History, in
	// the clock of the worker that ran the attempt (its estimate of Redis
	// time). A running task has none: Redis keeps no start of a running
	// attempt, only its lease (see LeasedAt). Zero for every other state.
	StartedAt time.Time `json:"started_at,omitzero"`
	// FinishedAt is, for a succeeded, dead or cancelled task, when it
	// ended; for a retrying one, when its last attempt failed (from
	// History, as StartedAt). Zero for a waiting, scheduled, held or
	// running task.
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// NextRunAt is when a scheduled, retrying or held task is due.
	NextRunAt time.Time         `json:"next_run_at,omitzero"`
	LastError string            `json:"last_error,omitempty"`
	Args      json.RawMessage   `json:"args,omitempty"`   // decoded through the codec gate into JSON
	Result    json.RawMessage   `json:"result,omitempty"` // succeeded (Task only)
	Meta      map[string]string `json:"meta,omitempty"`
	Group     string            `json:"group,omitempty"`
	Parent    string            `json:"parent,omitempty"`
	Partition string            `json:"partition_key,omitempty"`
	RateKey   string            `json:"rate_key,omitempty"`
	// Why says why a task waits when that is not plain: "no worker serves
	// kind X", "parked by limit kind:transcode", "waiting for partition p".
	Why string `json:"why,omitempty"`
	// History is the task's earlier attempts, oldest first, where kept.
	History []AttemptInfo `json:"history,omitempty"`

	// Worker is the consumer name of the worker that holds a running task.
	Worker string `json:"worker,omitempty"`
	// Deliveries counts the deliveries of a running task's current entry
	// (more than 1: taken over after a worker died or lost the lease).
	Deliveries int `json:"deliveries,omitempty"`
	// LeasedAt is when a running task's lease was last taken or renewed:
	// its delivery, or its worker's last heartbeat (Redis keeps no other
	// start time of a running entry, so StartedAt stays zero for it).
	LeasedAt time.Time `json:"leased_at,omitzero"`
	// Progress is what the task's handler last reported with
	// worker.ReportProgress, in this attempt or an earlier one (Attempt
	// says which); nil when it reported nothing, or the report expired
	// with the task's retention. Task reads it in every state; Tasks for
	// each task of the page, in the same round trip for the whole page.
	Progress *Progress `json:"progress,omitempty"`

	rateTurn int64  // the envelope's rate turn (held by a rate)
	parked   int    // the envelope's hand-backs for want of a handler
	prev     string // the task or group a continuation continues
}

// Progress is how far a task's handler has got, as it last reported with
// worker.ReportProgress: Done units of Total (bytes, for an upload; Total
// is 0 while the handler does not know it).
type Progress struct {
	Done    int64     `json:"done"`
	Total   int64     `json:"total"`
	Attempt int       `json:"attempt"` // the attempt that reported it
	Updated time.Time `json:"updated"` // when it was written, in Redis time
}

// Percent is Done as a share of Total, 0 to 100 (rounded down); -1 when
// Total is not known.
func (p Progress) Percent() int {
	if p.Total <= 0 {
		return -1
	}
	switch {
	case p.Done <= 0:
		return 0
	case p.Done >= p.Total:
		return 100
	case p.Done <= math.MaxInt64/100:
		return int(p.Done * 100 / p.Total)
	}
	return min(int(float64(p.Done)/float64(p.Total)*100), 99)
}

// AttemptInfo is one ended attempt of a task.
type AttemptInfo struct {
	Attempt    int       `json:"attempt"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Error      string    `json:"error,omitempty"`
	Worker     string    `json:"worker,omitempty"`
}

// GroupInfo is one ForkJoin or InvokeAll group and its progress.
type GroupInfo struct {
	ID        string    `json:"id"` // group:<home>/<id>
	Home      string    `json:"home"`
	State     string    `json:"state"` // open, succeeded, failed, cancelled
	Members   int64     `json:"members"`
	Succeeded int64     `json:"succeeded"`
	Failed    int64     `json:"failed"`
	Cancelled int64     `json:"cancelled"`
	Running   int64     `json:"running"` // members not ended yet
	Held      int64     `json:"held"`    // InvokeAll members not released yet
	Created   time.Time `json:"created,omitzero"`
	Join      string    `json:"join,omitempty"` // the join task's id
	// WorkDone and WorkTotal sum what the members reported with
	// worker.ReportProgress (bytes, for uploads), as patterns.Progress
	// does: a member that succeeded counts as done in full. Both are 0
	// when no member reported.
	WorkDone  int64 `json:"work_done"`
	WorkTotal int64 `json:"work_total"`
	// WorkError is set when the sums could not be read (a malformed
	// record: WorkDone and WorkTotal are 0 then).
	WorkError string `json:"work_error,omitempty"`
}

// RepeatInfo is one Repeat schedule.
type RepeatInfo struct {
	Name     string    `json:"name"`
	Queue    string    `json:"queue"`
	Kind     string    `json:"kind"`
	Schedule string    `json:"schedule"`
	NextFire time.Time `json:"next_fire,omitzero"`
	LastFire time.Time `json:"last_fire,omitzero"`
	LastTask string    `json:"last_task,omitempty"`
}

// WorkerInfo is one live worker, as it registered itself.
type WorkerInfo struct {
	Name          string         `json:"name"`
	Host          string         `json:"host"`
	PID           int            `json:"pid"`
	Queues        map[string]int `json:"queues"` // queue → weight
	Concurrency   int            `json:"concurrency"`
	Running       int            `json:"running"`
	Paused        []string       `json:"paused,omitempty"` // its queues it does not fetch from now
	Started       time.Time      `json:"started"`
	LastHeartbeat time.Time      `json:"last_heartbeat"`
}

// Tasks lists one page of queue's tasks in opts.State.
func (i *Inspector) Tasks(ctx context.Context, queue string, opts ListOpts) (TaskPage, error) {
	return i.tasks(ctx, queue, opts)
}

// Task returns one task, by id (<queue>/<key>), with its history.
func (i *Inspector) Task(ctx context.Context, id string) (TaskInfo, error) {
	return i.task(ctx, id)
}

// Pause stops every worker fetching from queue within 1 s; enqueue is
// still accepted and running tasks finish.
func (i *Inspector) Pause(ctx context.Context, queue string) error {
	return i.setPaused(ctx, queue, true)
}

// Resume undoes Pause.
func (i *Inspector) Resume(ctx context.Context, queue string) error {
	return i.setPaused(ctx, queue, false)
}

// RetryDead moves queue's dead tasks (of kind, or all when kind is "") back
// into the queue; it returns how many it moved.
func (i *Inspector) RetryDead(ctx context.Context, queue, kind string) (int, error) {
	return i.retryDead(ctx, queue, kind)
}

// PurgeDead deletes queue's dead tasks (of kind, or all when kind is "");
// it returns how many it deleted.
func (i *Inspector) PurgeDead(ctx context.Context, queue, kind string) (int, error) {
	return i.purgeDead(ctx, queue, kind)
}

// CancelAll cancels every task of queue in state (waiting, scheduled,
// retrying, held or running); it returns how many it cancelled.
func (i *Inspector) CancelAll(ctx context.Context, queue string, state State) (int, error) {
	return i.cancelAll(ctx, queue, state)
}

// Groups lists the groups homed in queue ("" for every queue), newest
// first. It reads them all: each queue's whole index of groups (up to
// 100,000 ids) and, per group, its hash and the sizes of its open and held
// sets; on a fleet with many groups that is a large read, fine for a
// command run once (the CLI) but not for a page polled every few seconds:
// GroupsPage reads a bounded page.
func (i *Inspector) Groups(ctx context.Context, queue string) ([]GroupInfo, error) {
	return i.groups(ctx, queue)
}

// Repeats lists every Repeat schedule.
func (i *Inspector) Repeats(ctx context.Context) ([]RepeatInfo, error) { return i.repeats(ctx) }

// Workers lists the live workers; one that died drops out within its lease.
func (i *Inspector) Workers(ctx context.Context) ([]WorkerInfo, error) { return i.workers(ctx) }
