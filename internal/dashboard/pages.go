package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
)

// readTimeout bounds the reads of one page.
const readTimeout = 10 * time.Second

// historyMinutes is the span of the overview's and the queue page's charts.
const historyMinutes = 60

// kindScan is how many tasks a queue page reads at most, from its cursor
// on, to find a page of tasks of the kind asked for: a kind is not indexed,
// so the filter reads tasks and keeps those that match, and stops there
// whatever it found (the page says so; Next reads on).
const kindScan = 1000

// historyReads is how many queues' histories the overview reads at once.
const historyReads = 8

// pageSize is the tasks of a page of the queue page.
const pageSize = 50

// queueRow is one queue of the overview.
type queueRow struct {
	inspect.QueueInfo
	Chart chart `json:"chart"`
}

type overviewData struct {
	Queues  []queueRow        `json:"queues"`
	Latency []latencyRow      `json:"latency,omitempty"`
	HasLat  bool              `json:"has_latency"`
	Totals  inspect.QueueInfo `json:"totals"`
}

func (s *server) overview(w http.ResponseWriter, r *http.Request) (result, error) {
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	qs, err := s.in.Queues(ctx)
	if err != nil {
		return result{}, err
	}
	d := overviewData{Queues: make([]queueRow, len(qs))}
	// One round trip per queue for its chart: a few at a time.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(historyReads)
	for j, q := range qs {
		g.Go(func() error {
			h, err := s.in.History(gctx, q.Queue, historyMinutes)
			if err != nil {
				return err
			}
			d.Queues[j].Chart = makeChart(h)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return result{}, err
	}
	for j, q := range qs {
		d.Queues[j].QueueInfo = q
		t := &d.Totals
		t.Waiting += q.Waiting
		t.Running += q.Running
		t.Scheduled += q.Scheduled
		t.Retrying += q.Retrying
		t.Held += q.Held
		t.Dead += q.Dead
		t.ProcessedLastMinute += q.ProcessedLastMinute
		t.FailedLastMinute += q.FailedLastMinute
	}
	if s.opts.Metrics != nil {
		d.HasLat = true
		if d.Latency, err = latency(s.opts.Metrics); err != nil {
			return result{}, err
		}
	}
	return result{name: "overview", title: "Overview", data: d}, nil
}

type queueData struct {
	Info     inspect.QueueInfo  `json:"info"`
	State    inspect.State      `json:"state"`
	Kind     string             `json:"kind,omitempty"`
	Cursor   string             `json:"cursor,omitempty"`
	Tasks    []inspect.TaskInfo `json:"tasks"`
	Next     string             `json:"next,omitempty"`
	Scanned  int                `json:"scanned,omitempty"` // with Kind: tasks read to find these
	Chart    chart              `json:"chart"`
	Lookup   string             `json:"lookup,omitempty"`
	NotFound bool               `json:"not_found,omitempty"`
	// Of and Index are set on the page of one shard of a sharded queue:
	// the queue, and the shard's index.
	Of    string `json:"of,omitempty"`
	Index int    `json:"index,omitempty"`
	// HasProgress is set when a task of the page has progress: the table
	// then has a column for it.
	HasProgress bool `json:"-"`
}

func (s *server) queue(w http.ResponseWriter, r *http.Request) (result, error) {
	name := r.PathValue("queue")
	// A sharded queue's page lists its shards; a shard's name (a link of
	// that list) gives a page of the shard alone.
	if err := keys.ValidatePhysicalQueue(name); err != nil {
		return result{}, badRequest{err}
	}
	q := r.URL.Query()
	d := queueData{State: inspect.State(q.Get("state")), Kind: strings.TrimSpace(q.Get("kind")), Cursor: q.Get("cursor")}
	if of, i, ok := keys.ParseShard(name); ok {
		d.Of, d.Index = of, i
	}
	if d.State == "" {
		d.State = inspect.StateWaiting
	}
	okState := false
	for _, st := range listStates {
		okState = okState || st == d.State
	}
	if !okState {
		return result{}, badRequest{fmt.Errorf("state %q: want one of waiting, running, scheduled, retrying, held, dead", d.State)}
	}
	if d.Kind != "" {
		if err := keys.ValidateName("kind", d.Kind); err != nil {
			return result{}, badRequest{err}
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	if id := strings.TrimSpace(q.Get("id")); id != "" {
		// A lookup by id: the task page, when the task is known, under
		// the id Task gives ("uploads/K" of a sharded queue names a shard).
		if !strings.Contains(id, "/") {
			id = name + "/" + id
		}
		d.Lookup = id
		if _, _, err := keys.SplitTaskID(id); err == nil {
			t, err := s.in.Task(ctx, id)
			if err != nil {
				return result{}, err
			}
			if t.State != inspect.StateUnknown {
				http.Redirect(w, r, s.base+"/task?id="+url.QueryEscape(t.ID), http.StatusSeeOther)
				return result{}, nil
			}
		}
		d.NotFound = true
	}
	var err error
	if d.Info, err = s.in.Queue(ctx, name); err != nil {
		return result{}, err
	}
	h, err := s.in.History(ctx, name, historyMinutes)
	if err != nil {
		return result{}, err
	}
	d.Chart = makeChart(h)
	opts := inspect.ListOpts{State: d.State, Cursor: d.Cursor, Limit: pageSize}
	if d.Kind == "" {
		p, err := s.in.Tasks(ctx, name, opts)
		if err != nil {
			return result{}, pageErr(err)
		}
		d.Tasks, d.Next = p.Tasks, p.Next
	} else {
		// Read pages of up to 200 and keep the kind's, until a page is
		// full or kindScan tasks were read.
		opts.Kind, opts.Limit = d.Kind, 200
		for d.Scanned < kindScan && len(d.Tasks) < pageSize {
			p, err := s.in.Tasks(ctx, name, opts)
			if err != nil {
				return result{}, pageErr(err)
			}
			d.Scanned += opts.Limit
			d.Tasks = append(d.Tasks, p.Tasks...)
			d.Next = p.Next
			if p.Next == "" {
				break
			}
			opts.Cursor = p.Next
		}
	}
	if d.Tasks == nil {
		d.Tasks = []inspect.TaskInfo{}
	}
	for _, t := range d.Tasks {
		d.HasProgress = d.HasProgress || t.Progress != nil
	}
	return result{name: "queue", title: "Queue " + name, data: d}, nil
}

// pageErr makes a bad cursor the request's fault.
func pageErr(err error) error {
	if errors.Is(err, inspect.ErrBadCursor) {
		return badRequest{err}
	}
	return err
}

type taskData struct {
	Task       inspect.TaskInfo  `json:"task"`
	Relations  inspect.Relations `json:"relations"`
	Args       string            `json:"-"`
	ArgsCut    bool              `json:"-"`
	Result     string            `json:"-"`
	ResultCut  bool              `json:"-"`
	Full       bool              `json:"-"`
	ErrorCut   bool              `json:"-"`
	LastError  string            `json:"-"`
	Dead       bool              `json:"-"`
	Cancelable bool              `json:"-"`
}

// relationsShown is how many children and continuations the task page
// lists.
const relationsShown = 100

func (s *server) task(w http.ResponseWriter, r *http.Request) (result, error) {
	id := r.URL.Query().Get("id")
	if _, _, err := keys.SplitTaskID(id); err != nil {
		return result{}, badRequest{err}
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	t, err := s.in.Task(ctx, id)
	if err != nil {
		return result{}, err
	}
	d := taskData{Task: t, Full: r.URL.Query().Get("full") == "1"}
	if d.Relations, err = s.in.Relations(ctx, id, relationsShown); err != nil {
		return result{}, err
	}
	limit := pageLen
	if d.Full {
		limit = 0
	}
	d.Args, d.ArgsCut = pretty(t.Args, limit)
	d.Result, d.ResultCut = pretty(t.Result, limit)
	d.LastError = valid(t.LastError)
	if limit > 0 && len(d.LastError) > limit {
		d.LastError, d.ErrorCut = strings.ToValidUTF8(d.LastError[:limit], "")+"…", true
	}
	d.Dead = t.State == inspect.StateDead
	switch t.State {
	case inspect.StateWaiting, inspect.StateRunning, inspect.StateScheduled, inspect.StateRetrying, inspect.StateHeld:
		d.Cancelable = true
	}
	status := 0
	if t.State == inspect.StateUnknown {
		status = http.StatusNotFound
	}
	return result{name: "task", title: "Task " + valid(id), data: d, status: status}, nil
}

// groupsPageSize is how many groups the groups page lists at once.
const groupsPageSize = 100

type groupsData struct {
	Queue  string              `json:"queue,omitempty"`
	Groups []inspect.GroupInfo `json:"groups"`
	Cursor string              `json:"cursor,omitempty"`
	Next   string              `json:"next,omitempty"`
	Size   int                 `json:"page_size"`
}

func (s *server) groups(w http.ResponseWriter, r *http.Request) (result, error) {
	q := r.URL.Query().Get("queue")
	if q != "" {
		if err := keys.ValidateName("queue", q); err != nil {
			return result{}, badRequest{err}
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	cursor := r.URL.Query().Get("cursor")
	p, err := s.in.GroupsPage(ctx, q, inspect.GroupListOpts{Limit: groupsPageSize, Cursor: cursor})
	if err != nil {
		return result{}, pageErr(err)
	}
	if p.Groups == nil {
		p.Groups = []inspect.GroupInfo{}
	}
	return result{name: "groups", title: "Groups", data: groupsData{Queue: q, Groups: p.Groups, Cursor: cursor, Next: p.Next, Size: groupsPageSize}}, nil
}

func (s *server) group(w http.ResponseWriter, r *http.Request) (result, error) {
	id := r.URL.Query().Get("id")
	if _, _, err := keys.SplitGroupID(id); err != nil {
		return result{}, badRequest{err}
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	g, err := s.in.GroupMembers(ctx, id)
	if err != nil {
		return result{}, err
	}
	status := 0
	if g.State == "" {
		status = http.StatusNotFound
	}
	d := groupData{GroupDetail: g}
	for _, m := range g.MemberList {
		d.HasProgress = d.HasProgress || m.Progress != nil
	}
	return result{name: "group", title: "Group " + id, data: d, status: status}, nil
}

// groupData is the group page's: the group, and whether a member has
// progress (the members' table then has a column for it).
type groupData struct {
	inspect.GroupDetail
	HasProgress bool `json:"-"`
}

func (s *server) repeats(w http.ResponseWriter, r *http.Request) (result, error) {
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	rs, err := s.in.Repeats(ctx)
	if err != nil {
		return result{}, err
	}
	if rs == nil {
		rs = []inspect.RepeatInfo{}
	}
	return result{name: "repeats", title: "Repeats", data: rs}, nil
}

func (s *server) workers(w http.ResponseWriter, r *http.Request) (result, error) {
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	ws, err := s.in.Workers(ctx)
	if err != nil {
		return result{}, err
	}
	if ws == nil {
		ws = []inspect.WorkerInfo{}
	}
	return result{name: "workers", title: "Workers", data: ws}, nil
}

// throttleScan bounds the keys the throttles page examines per master to
// find limits and rate buckets.
const throttleScan = 10000

func (s *server) throttles(w http.ResponseWriter, r *http.Request) (result, error) {
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	t, err := s.in.Throttles(ctx, throttleScan)
	if err != nil {
		return result{}, err
	}
	return result{name: "throttles", title: "Throttles and limits", data: t}, nil
}
