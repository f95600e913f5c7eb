package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/patterns"
)

func init() { extraRoutes = append(extraRoutes, (*server).routeGroups) }

// routeGroups registers the routes of groups. A group id is
// "group:<home>/<id>": a route takes it as two segments,
// /v1/groups/{home}/{id}... (home with or without "group:"), or as one with
// the slash escaped (/v1/groups/group:uploads%2Fg1...). A group whose own id
// is "outcome" or "cancel" reads as /v1/groups/{id}/outcome or .../cancel,
// which groupOutcome and cancelGroup tell apart (see groupRef).
func (s *server) routeGroups(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/groups", s.startGroup)
	mux.HandleFunc("GET /v1/groups/{id}", s.groupProgress)
	mux.HandleFunc("GET /v1/groups/{home}/{id}", s.groupProgress)
	mux.HandleFunc("GET /v1/groups/{id}/outcome", s.groupOutcome)
	mux.HandleFunc("GET /v1/groups/{home}/{id}/outcome", s.groupOutcome)
	mux.HandleFunc("POST /v1/groups/{id}/cancel", s.cancelGroup)
	mux.HandleFunc("POST /v1/groups/{home}/{id}/cancel", s.cancelGroup)
}

// groupRequest is the body of POST /v1/groups. Members and the join are
// decoded one by one, so that an error names its task ("tasks[3].kind").
type groupRequest struct {
	ID          string            `json:"id"`
	Queue       string            `json:"queue"`
	Tasks       []json.RawMessage `json:"tasks"`
	Join        json.RawMessage   `json:"join"`
	Concurrency int               `json:"concurrency"`
	FailFast    bool              `json:"fail_fast"`
	Retention   string            `json:"retention"`
}

// groupStarted is the answer to POST /v1/groups: the group's id and, for
// a ForkJoin with a join, the join's task id (to follow it with GET
// /v1/tasks/{id}/outcome).
type groupStarted struct {
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
	Join      string `json:"join,omitempty"`
}

// startGroup serves POST /v1/groups: a ForkJoin of the tasks with the
// optional join, or an InvokeAll when "concurrency" is above 0. Every task
// is checked first (a member's queue is its own or the group's; a member
// or join with an "id" is refused, as patterns refuses it: the group names
// them), and the token must allow the home queue and every member's and the
// join's. 201 with the group's id; 200 with duplicate true when a group with
// the request's "id" exists in the home queue.
func (s *server) startGroup(w http.ResponseWriter, r *http.Request) {
	tok, e := s.authenticate(r)
	if e != nil {
		s.refuse(w, r, e)
		return
	}
	b, e := s.readBody(w, r, s.cfg.MaxBatchBytes)
	if e != nil {
		s.refuse(w, r, e)
		return
	}
	var req groupRequest
	if e := s.decode("", b, &req); e != nil {
		s.refuse(w, r, e)
		return
	}
	g, e := s.groupPlan(&req)
	if e != nil {
		s.refuse(w, r, e)
		return
	}
	for _, q := range g.queues {
		if !tok.allows(q.queue) {
			s.refuse(w, r, &apiError{Status: http.StatusForbidden, Msg: fmt.Sprintf("token %q may not use queue %s", tok.name, quote(q.queue)), Field: q.field})
			return
		}
	}
	// A start cut short leaves the group incomplete until it is sent
	// again: it goes on when the caller goes away.
	ctx := context.WithoutCancel(traceContext(r))
	var grp *patterns.Group
	var err error
	if req.Concurrency > 0 {
		grp, err = patterns.InvokeAll(ctx, s.client, g.specs, req.Concurrency, g.opts)
	} else {
		grp, err = patterns.ForkJoin(ctx, s.client, g.specs, g.join, g.opts)
	}
	if err != nil {
		s.refuse(w, r, s.groupFailed(r, err))
		return
	}
	out := groupStarted{ID: grp.ID(), Duplicate: grp.Duplicate()}
	if g.join != nil || out.Duplicate {
		// The join's id is the group's to give; a duplicate's group was
		// started with a join or without.
		if h, err := grp.Join(r.Context()); err == nil {
			out.Join = h.ID()
		} else if !errors.Is(err, patterns.ErrNoJoin) {
			s.log.Warn("httpapi: reading a group's join failed", "group", grp.ID(), "err", err)
		}
	}
	status := http.StatusCreated
	if out.Duplicate {
		status = http.StatusOK
	}
	writeJSON(w, status, out)
}

// groupCall is a checked group request, as patterns takes it.
type groupCall struct {
	specs  []client.Spec
	join   *client.Spec
	opts   *patterns.GroupOpts
	queues []fieldQueue // the queues the group touches, home first
}

// fieldQueue is a queue a group touches, and the field that names it.
type fieldQueue struct{ field, queue string }

// groupPlan checks a group request: 400 naming the field at fault (413 for
// more members than Config.MaxBatchTasks, or a task's args over the
// payload limit).
func (s *server) groupPlan(req *groupRequest) (*groupCall, *apiError) {
	bad := func(field, format string, a ...any) (*groupCall, *apiError) {
		return nil, &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf(format, a...), Field: field}
	}
	switch {
	case len(req.Tasks) == 0:
		return bad("tasks", "a group needs at least one task")
	case len(req.Tasks) > s.cfg.MaxBatchTasks:
		return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("the group has %d tasks; the limit is %d", len(req.Tasks), s.cfg.MaxBatchTasks), Field: "tasks"}
	case req.Concurrency < 0:
		return bad("concurrency", "concurrency is %d; want 0 (a ForkJoin) or more (an InvokeAll)", req.Concurrency)
	case req.Concurrency > 0 && hasValue(req.Join):
		return bad("join", "a group with a concurrency (an InvokeAll) takes no join")
	}
	opts := &patterns.GroupOpts{ID: req.ID, Queue: req.Queue, FailFast: req.FailFast}
	if req.ID != "" && (keys.ValidateName("group id", req.ID) != nil || len(req.ID) > keys.MaxGroupIDLen) {
		return bad("id", "group id %s: want 1 to %d bytes of A-Z a-z 0-9 . _ -", quote(req.ID), keys.MaxGroupIDLen)
	}
	if req.Queue != "" && keys.ValidateName("queue", req.Queue) != nil {
		return bad("queue", "queue %s: %s", quote(req.Queue), nameRule)
	}
	if dotName(req.ID) || dotName(req.Queue) {
		field, name := "id", req.ID
		if !dotName(req.ID) {
			field, name = "queue", req.Queue
		}
		return bad(field, "%s %s: %s", field, quote(name), dotRule)
	}
	if req.Retention != "" {
		d, err := time.ParseDuration(req.Retention)
		if err != nil || d < time.Millisecond {
			return bad("retention", "retention %s: want a duration of at least 1ms, such as \"24h\"", quote(req.Retention))
		}
		opts.Retention = d
	}
	now := s.cfg.Now()
	g := &groupCall{opts: opts, specs: make([]client.Spec, len(req.Tasks))}
	if req.Queue != "" {
		g.queues = append(g.queues, fieldQueue{"queue", req.Queue})
	}
	task := func(field string, raw json.RawMessage) (client.Spec, *apiError) {
		if e := checkTask(field, raw); e != nil {
			return client.Spec{}, e
		}
		var t TaskObject
		if e := s.decode(field, raw, &t); e != nil {
			return client.Spec{}, e
		}
		if t.ID != "" {
			return client.Spec{}, &apiError{Status: http.StatusBadRequest, Msg: "a group names its members and its join itself: leave \"id\" out (the group's \"id\" makes the start idempotent)", Field: join(field, "id")}
		}
		queue := t.Queue
		if queue == "" {
			queue = req.Queue
		}
		sp, e := s.spec(field, queue, &t, now)
		if e != nil {
			return client.Spec{}, e
		}
		g.queues = append(g.queues, fieldQueue{join(field, "queue"), sp.Opts.Queue})
		return sp, nil
	}
	for i, raw := range req.Tasks {
		sp, e := task(fmt.Sprintf("tasks[%d]", i), raw)
		if e != nil {
			return nil, e
		}
		g.specs[i] = sp
	}
	if req.Queue == "" {
		// The home queue is the first member's (patterns' default).
		g.queues = append([]fieldQueue{{"tasks[0].queue", g.specs[0].Opts.Queue}}, g.queues...)
	}
	if hasValue(req.Join) {
		sp, e := task("join", req.Join)
		if e != nil {
			return nil, e
		}
		g.join = &sp
	}
	return g, nil
}

// hasValue reports whether raw holds a JSON value other than null.
func hasValue(raw json.RawMessage) bool {
	v := strings.TrimSpace(string(raw))
	return v != "" && v != "null"
}

// groupFailed is the answer to a ForkJoin or InvokeAll that failed: a
// group made but not complete is a 503 that names the id to send it again
// with; the rest as writeFailed says.
func (s *server) groupFailed(r *http.Request, err error) *apiError {
	var inc *patterns.IncompleteError
	if errors.As(err, &inc) {
		s.log.Warn("httpapi: a group was left incomplete", "group", inc.Group, "err", err)
		return &apiError{Status: http.StatusServiceUnavailable, RetryAfter: retryAfter,
			Msg: fmt.Sprintf("writing to Redis failed: group %s was made but not every task was added; send the same request again with \"id\": %q to complete it (or cancel the group)", inc.Group, inc.ID)}
	}
	return s.writeFailed(r, "", true, err)
}

// groupRef returns the group id r's path names, "group:<home>/<id>", and
// its home queue: from /v1/groups/{home}/{id}... (home with or without
// "group:"), or from the one escaped segment of /v1/groups/{id}... (with or
// without "group:"). A malformed id is a 400 (field "id").
func groupRef(r *http.Request) (id, home string, e *apiError) {
	if h := r.PathValue("home"); h != "" {
		id = keys.GroupPrefix + strings.TrimPrefix(h, keys.GroupPrefix) + "/" + r.PathValue("id")
	} else {
		id = r.PathValue("id")
		if !keys.IsGroupID(id) {
			id = keys.GroupPrefix + id
		}
	}
	home, gid, err := keys.SplitGroupID(id)
	if err == nil && (dotName(home) || dotName(gid)) {
		return "", "", &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("group id %s: %s", quote(id), dotRule), Field: "id"}
	}
	if err != nil {
		return "", "", &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("group id %s: want group:<home>/<id>, the home queue 1 to 128 bytes and the id 1 to %d of A-Z a-z 0-9 . _ - (escape the slash as %%2F in one segment, or give both segments)", quote(id), keys.MaxGroupIDLen), Field: "id"}
	}
	return id, home, nil
}

// openGroup authenticates r, reads the group id of its path, and checks
// the token may touch the group's home queue. It returns the token (nil
// without tokens) for allowMembers.
func (s *server) openGroup(r *http.Request) (*patterns.Group, *token, *apiError) {
	tok, e := s.authenticate(r)
	if e != nil {
		return nil, nil, e
	}
	id, home, e := groupRef(r)
	if e != nil {
		return nil, nil, e
	}
	if e := s.allow(tok, home); e != nil {
		return nil, nil, e
	}
	g, err := patterns.Open(s.client, id)
	if err != nil {
		return nil, nil, &apiError{Status: http.StatusBadRequest, Msg: clip(err.Error(), 200), Field: "id"}
	}
	return g, tok, nil
}

// maxNestedGroups bounds the groups allowMembers reads: a group and the
// groups nested in it, at any depth.
const maxNestedGroups = 1000

// allowMembers checks that tok may touch the queue of every member of g,
// of its join, and of the members and joins of the groups nested in it (a
// cancel reaches them all, and an outcome shows them): a 403 naming the
// first it may not. A token of every queue (or none configured) passes
// without a read; else each group costs two reads of its member list.
func (s *server) allowMembers(r *http.Request, tok *token, g *patterns.Group) *apiError {
	if tok == nil || tok.queues == nil {
		return nil
	}
	seen := map[string]bool{g.ID(): true}
	todo := []*patterns.Group{g}
	for len(todo) > 0 {
		cur := todo[0]
		todo = todo[1:]
		members, joinID, err := cur.MemberIDs(r.Context())
		if err != nil {
			if cur != g && errors.Is(err, patterns.ErrUnknownGroup) {
				continue // a nested group gone: nothing of it to reach
			}
			return s.groupReadFailed(r, cur, err)
		}
		if joinID != "" {
			members = append(members, joinID)
		}
		for _, m := range members {
			var q string
			if keys.IsGroupID(m) {
				home, _, err := keys.SplitGroupID(m)
				if err != nil || seen[m] {
					continue
				}
				q = home
				if len(seen) >= maxNestedGroups {
					return &apiError{Status: http.StatusForbidden, Msg: fmt.Sprintf("token %q is limited to queues, and group %s nests more than %d groups to check", tok.name, quote(g.ID()), maxNestedGroups), Field: "queue"}
				}
				seen[m] = true
				if ng, err := patterns.Open(s.client, m); err == nil {
					todo = append(todo, ng)
				}
			} else if queue, _, err := keys.SplitTaskID(m); err == nil {
				q = queue
			} else {
				continue // never added
			}
			if e := s.allow(tok, q); e != nil {
				return e
			}
		}
	}
	return nil
}

// progressView is a group's progress as the API shows it.
type progressView struct {
	ID        string              `json:"id"`
	State     patterns.GroupState `json:"state"`
	Total     int                 `json:"total"`
	Succeeded int                 `json:"succeeded"`
	Failed    int                 `json:"failed"`
	Done      int                 `json:"done"`
	Ended     bool                `json:"ended"`
	WorkDone  int64               `json:"work_done"`
	WorkTotal int64               `json:"work_total"`
}

func viewOf(id string, p patterns.Progress) progressView {
	return progressView{ID: id, State: p.State, Total: p.Total, Succeeded: p.Succeeded, Failed: p.Failed, Done: p.Done(), Ended: p.Ended(),
		WorkDone: p.WorkDone, WorkTotal: p.WorkTotal}
}

// groupReadFailed is the answer to a group read that failed: 404 for an
// unknown group, the rest as readFailed says.
func (s *server) groupReadFailed(r *http.Request, g *patterns.Group, err error) *apiError {
	if errors.Is(err, patterns.ErrUnknownGroup) {
		return &apiError{Status: http.StatusNotFound, Msg: "no group " + quote(g.ID())}
	}
	return s.readFailed(r, "group "+quote(g.ID()), err)
}

// groupProgress serves GET /v1/groups/{id}: the group's state and counts.
func (s *server) groupProgress(w http.ResponseWriter, r *http.Request) {
	g, _, e := s.openGroup(r)
	if e != nil {
		s.refuse(w, r, e)
		return
	}
	p, err := g.Progress(r.Context())
	if err != nil {
		s.refuse(w, r, s.groupReadFailed(r, g, err))
		return
	}
	writeJSON(w, http.StatusOK, viewOf(g.ID(), p))
}

// memberView is how one member of a group ended.
type memberView struct {
	ID      string          `json:"id,omitempty"`
	State   client.State    `json:"state,omitempty"`
	Attempt int             `json:"attempt,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// outcomeOfGroup is the answer of GET /v1/groups/{id}/outcome.
type outcomeOfGroup struct {
	progressView
	Outcomes []memberView `json:"outcomes,omitempty"`
}

// groupOutcome serves GET /v1/groups/{id}/outcome?wait=: the group's
// progress, waiting up to wait for it to end (a notification, not
// polling), and once it ended how each member did, in submission order.
func (s *server) groupOutcome(w http.ResponseWriter, r *http.Request) {
	if id := r.PathValue("id"); r.PathValue("home") == "" && !strings.Contains(id, "/") {
		// /v1/groups/{home}/outcome: the group whose id is "outcome".
		s.groupProgress(w, withGroupPath(r, id, "outcome"))
		return
	}
	g, tok, e := s.openGroup(r)
	if e != nil {
		s.refuse(w, r, e)
		return
	}
	wait, e := s.waitParam(r)
	if e != nil {
		s.refuse(w, r, e)
		return
	}
	var p patterns.Progress
	var err error
	if wait > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		p, err = g.Wait(ctx)
		cancel()
		if err != nil && r.Context().Err() != nil {
			return // the caller went away
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			// The wait ran out: the progress now.
			p, err = g.Progress(r.Context())
		}
	} else {
		p, err = g.Progress(r.Context())
	}
	if err != nil {
		s.refuse(w, r, s.groupReadFailed(r, g, err))
		return
	}
	out := outcomeOfGroup{progressView: viewOf(g.ID(), p)}
	if !p.Ended() {
		writeJSON(w, http.StatusOK, out)
		return
	}
	// The outcomes show every member: a token limited to queues must
	// allow each one's.
	if e := s.allowMembers(r, tok, g); e != nil {
		s.refuse(w, r, e)
		return
	}
	outs, err := g.Outcome(r.Context())
	if outs == nil {
		s.refuse(w, r, s.groupReadFailed(r, g, err))
		return
	}
	out.Outcomes = make([]memberView, len(outs))
	for i, o := range outs {
		m, e := memberOf(o)
		if e != nil {
			s.log.Warn("httpapi: a member's result cannot be read", "group", g.ID(), "member", o.ID, "err", e.Msg)
			s.refuse(w, r, e)
			return
		}
		out.Outcomes[i] = m
	}
	writeJSON(w, http.StatusOK, out)
}

// memberOf is o as the API shows it: a succeeded member's result as JSON
// (codec.ToJSON; null when it has none, a nested group), else the error:
// a task's last error and the attempt it ended in, a nested group's counts
// (patterns.GroupError), or why it had not ended.
func memberOf(o patterns.Outcome) (memberView, *apiError) {
	m := memberView{ID: o.ID, State: o.State}
	if o.Err == nil {
		m.Result = json.RawMessage("null")
		if len(o.Result) > 0 {
			js, err := codec.ToJSON(nil, o.Result)
			if err != nil {
				return m, &apiError{Status: http.StatusInternalServerError, Msg: fmt.Sprintf("member %s succeeded, but its result cannot be read as JSON: %s", quote(o.ID), clip(err.Error(), 200))}
			}
			m.Result = js
		}
		return m, nil
	}
	var te *client.TaskError
	var ge *patterns.GroupError
	switch {
	case errors.As(o.Err, &te):
		m.Attempt, m.Error = te.Attempt, te.Message
	case errors.As(o.Err, &ge):
		m.Error = ge.Error()
	default:
		m.Error = o.Err.Error()
	}
	return m, nil
}

// withGroupPath is r as /v1/groups/{home}/{id} names the group home/id.
func withGroupPath(r *http.Request, home, id string) *http.Request {
	r2 := r.Clone(r.Context())
	r2.SetPathValue("home", home)
	r2.SetPathValue("id", id)
	return r2
}

// cancelGroup serves POST /v1/groups/{id}/cancel: patterns.Group.Cancel,
// then the group's progress. Members not started never start, running ones
// are cancelled, and the group ends cancelled once each has ended; a group
// that ended already stays as it ended.
func (s *server) cancelGroup(w http.ResponseWriter, r *http.Request) {
	if id := r.PathValue("id"); r.PathValue("home") == "" && !strings.Contains(id, "/") {
		// /v1/groups/{home}/cancel: the group whose id is "cancel", which
		// takes GET only.
		w.Header().Set("Allow", "GET, HEAD")
		s.refuse(w, r, &apiError{Status: http.StatusMethodNotAllowed, Msg: "method POST is not allowed here; use GET"})
		return
	}
	g, tok, e := s.openGroup(r)
	if e != nil {
		s.refuse(w, r, e)
		return
	}
	// The cancel reaches every member, the join and the nested groups: a
	// token limited to queues must allow each one's.
	if e := s.allowMembers(r, tok, g); e != nil {
		s.refuse(w, r, e)
		return
	}
	if err := g.Cancel(r.Context()); err != nil {
		if errors.Is(err, patterns.ErrUnknownGroup) {
			s.refuse(w, r, s.groupReadFailed(r, g, err))
			return
		}
		s.log.Warn("httpapi: cancel failed", "group", g.ID(), "err", err)
		s.refuse(w, r, &apiError{Status: http.StatusServiceUnavailable, Msg: "the cancel failed in Redis and may have been applied; retrying it is safe", RetryAfter: retryAfter})
		return
	}
	p, err := g.Progress(r.Context())
	if err != nil {
		s.refuse(w, r, s.groupReadFailed(r, g, err))
		return
	}
	writeJSON(w, http.StatusOK, viewOf(g.ID(), p))
}
