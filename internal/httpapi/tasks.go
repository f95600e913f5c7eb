package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
)

// enqueued is the answer to POST /v1/queues/{queue}/tasks.
type enqueued struct {
	ID        string       `json:"id"`
	Queue     string       `json:"queue"`
	State     client.State `json:"state,omitempty"`
	Duplicate bool         `json:"duplicate"`
}

// traceContext is r's ctx with the W3C trace context of its traceparent
// and tracestate headers, which the client gives the tasks it enqueues
// (client.EnqueueOpts.TraceParent): the handlers' spans continue the
// caller's trace. An invalid traceparent is ignored.
func traceContext(r *http.Request) context.Context {
	ctx := r.Context()
	if r.Header.Get("Traceparent") == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(r.Header))
}

// writeTimeout bounds the writes of an enqueue once its body was read.
const writeTimeout = 30 * time.Second

// writeContext is the context of r's writes to Redis: its trace context,
// not cancelled when the caller goes away (a batch cut between two of its
// writes would leave some tasks added and the caller told nothing), but
// ended after writeTimeout.
func writeContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(traceContext(r)), writeTimeout)
}

// enqueue serves POST /v1/queues/{queue}/tasks: one task. 201 with its id
// and the state it was given; 200 with duplicate true and its state read
// back when a task with its "id" exists.
func (s *server) enqueue(w http.ResponseWriter, r *http.Request) {
	queue := r.PathValue("queue")
	if e := s.authorize(r, queue); e != nil {
		s.refuse(w, r, e)
		return
	}
	b, e := s.readBody(w, r, s.cfg.MaxBodyBytes)
	if e != nil {
		s.refuse(w, r, e)
		return
	}
	if e := checkTask("", b); e != nil {
		s.refuse(w, r, e)
		return
	}
	var t TaskObject
	if e := s.decode("", b, &t); e != nil {
		s.refuse(w, r, e)
		return
	}
	now := s.cfg.Now()
	sp, e := s.spec("", queue, &t, now)
	if e != nil {
		s.refuse(w, r, e)
		return
	}
	ctx, cancel := writeContext(r)
	h, err := s.client.Enqueue(ctx, sp.Args, sp.Opts)
	cancel()
	if err != nil && h == nil {
		s.refuse(w, r, s.writeFailed(r, "", false, err))
		return
	}
	if err != nil {
		// Added; only its record as a child failed (not from HTTP).
		s.log.Warn("httpapi: enqueue", "id", h.ID(), "err", err)
	}
	out := enqueued{ID: h.ID(), Queue: h.Queue(), Duplicate: h.Duplicate()}
	status := http.StatusCreated
	switch {
	case out.Duplicate:
		status = http.StatusOK
		out.State = s.stateOf(r.Context(), h)
	case t.PartitionKey != "":
		// Pending, or waiting behind the earlier tasks of its key: only
		// Redis knows.
		out.State = s.stateOf(r.Context(), h)
	default:
		out.State = givenState(sp.Opts, now)
	}
	writeJSON(w, status, out)
}

// givenState is the state the client gives a task enqueued with o at now:
// scheduled when delayed (Redis' clock decides a process_at within the
// clocks' skew of now), else pending.
func givenState(o *client.EnqueueOpts, now time.Time) client.State {
	if o.Delay > 0 || o.ProcessAt.After(now) {
		return client.StateScheduled
	}
	return client.StatePending
}

// stateOf reads h's state; "" (left out of the answer) when that fails.
func (s *server) stateOf(ctx context.Context, h *client.Handle) client.State {
	st, err := h.State(ctx)
	if err != nil {
		return ""
	}
	return st
}

// batchTask is one task of the answer to a batch.
type batchTask struct {
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
}

// enqueueBatch serves POST /v1/queues/{queue}/tasks/batch: a JSON array of
// TaskObjects, or JSON lines (one TaskObject a line), read as a stream.
// Every task is checked before any is sent (client.EnqueueMany); the ids
// come back in order: 201, or 200 when every task was a duplicate.
func (s *server) enqueueBatch(w http.ResponseWriter, r *http.Request) {
	queue := r.PathValue("queue")
	if e := s.authorize(r, queue); e != nil {
		s.refuse(w, r, e)
		return
	}
	specs, e := s.readBatch(w, r, queue)
	if e != nil {
		if e.Status == http.StatusRequestTimeout {
			w.Header().Set("Connection", "close")
		}
		s.refuse(w, r, e)
		return
	}
	s.bodyDeadline(w, time.Time{})
	ctx, cancel := writeContext(r)
	hs, err := s.client.EnqueueMany(ctx, specs)
	cancel()
	if err != nil {
		s.refuse(w, r, s.writeFailed(r, "", true, err))
		return
	}
	out := struct {
		Tasks []batchTask `json:"tasks"`
	}{Tasks: make([]batchTask, len(hs))}
	status := http.StatusOK
	for i, h := range hs {
		out.Tasks[i] = batchTask{ID: h.ID(), Duplicate: h.Duplicate()}
		if !h.Duplicate() {
			status = http.StatusCreated
		}
	}
	writeJSON(w, status, out)
}

// readBatch reads and checks the tasks of a batch body.
func (s *server) readBatch(w http.ResponseWriter, r *http.Request, queue string) ([]client.Spec, *apiError) {
	body, bt, e := s.openBody(w, r, s.cfg.MaxBatchBytes)
	if e != nil {
		return nil, e
	}
	br := bufio.NewReaderSize(body, 32<<10)
	first, err := firstByte(br)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, jsonError("", err)
	}
	array := bt != bodyLines && first == '['
	dec := json.NewDecoder(br)
	dec.DisallowUnknownFields()
	if array {
		if _, err := dec.Token(); err != nil {
			return nil, jsonError("", err)
		}
	}
	now := s.cfg.Now()
	specs := make([]client.Spec, 0, 64)
	for i := 0; ; i++ {
		if array && !dec.More() {
			break
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if !array && errors.Is(err, io.EOF) {
				break
			}
			return nil, jsonError(fmt.Sprintf("tasks[%d]", i), err)
		}
		if i == s.cfg.MaxBatchTasks {
			return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("the batch has more than %d tasks", s.cfg.MaxBatchTasks), Field: "tasks"}
		}
		// The envelope strictly (checkTask: names exact, once each), then
		// into its fields.
		if e := checkTask("", raw); e != nil {
			e.Field = join(fmt.Sprintf("tasks[%d]", i), e.Field)
			return nil, e
		}
		var t TaskObject
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, jsonError(fmt.Sprintf("tasks[%d]", i), err)
		}
		sp, e := s.spec("", queue, &t, now)
		if e != nil {
			// The prefix is made only for an error: not a string a task.
			e.Field = join(fmt.Sprintf("tasks[%d]", i), e.Field)
			return nil, e
		}
		specs = append(specs, sp)
	}
	if array {
		if _, err := dec.Token(); err != nil { // the closing ]
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // not an empty body: a cut one
			}
			return nil, jsonError("", err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			if err != nil {
				return nil, jsonError("", err)
			}
			return nil, &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("data after the JSON array, at byte %d", dec.InputOffset())}
		}
	}
	if len(specs) == 0 {
		return nil, &apiError{Status: http.StatusBadRequest, Msg: "the batch has no tasks", Field: "tasks"}
	}
	return specs, nil
}

// firstByte returns the first byte of br that is not JSON white space,
// leaving it unread.
func firstByte(br *bufio.Reader) (byte, error) {
	for {
		c, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return c, br.UnreadByte()
		}
	}
}

// taskRef returns the id of the task r's path names, "<queue>/<key>":
// from /v1/tasks/{queue}/{key}..., or from the one escaped segment of
// /v1/tasks/{id}... ("uploads%2Fa1"). A malformed id is a 400 (field "id").
func (s *server) taskRef(r *http.Request) (id string, e *apiError) {
	if q := r.PathValue("queue"); q != "" {
		id = q + "/" + r.PathValue("key")
	} else {
		id = r.PathValue("id")
	}
	if q, k, err := keys.SplitTaskID(id); err == nil && (dotName(q) || dotName(k)) {
		return "", &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("task id %s: %s", quote(id), dotRule), Field: "id"}
	} else if err != nil {
		return "", &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("task id %s: want <queue>/<key>, each 1 to 128 bytes of A-Z a-z 0-9 . _ - (escape the slash as %%2F in one segment, or give both segments)", quote(id)), Field: "id"}
	}
	return id, nil
}

// openTask authenticates r, reads the task id of its path, and checks the
// token may touch the task's queue.
func (s *server) openTask(r *http.Request) (*client.Handle, *apiError) {
	tok, e := s.authenticate(r)
	if e != nil {
		return nil, e
	}
	id, e := s.taskRef(r)
	if e != nil {
		return nil, e
	}
	h, err := s.client.Task(id)
	if err != nil {
		return nil, &apiError{Status: http.StatusBadRequest, Msg: clip(err.Error(), 200), Field: "id"}
	}
	if e := s.allow(tok, h.Queue()); e != nil {
		return nil, e
	}
	return h, nil
}

// taskView is a task as GET /v1/tasks/{id} shows it: the inspector's view
// with the client's state. Kind and MaxAttempts come from the task's
// envelope, which Redis no longer holds once the task succeeded (its record
// is replaced by the result, which keeps neither): they are left out then,
// rather than shown as "" and 0.
type taskView struct {
	inspect.TaskInfo
	Kind        string       `json:"kind,omitempty"`
	MaxAttempts int          `json:"max_attempts,omitempty"`
	State       client.State `json:"state"`
}

// getTask serves GET /v1/tasks/{id}.
func (s *server) getTask(w http.ResponseWriter, r *http.Request) {
	h, e := s.openTask(r)
	if e != nil {
		s.refuse(w, r, e)
		return
	}
	v, err := s.taskView(r.Context(), h)
	if err != nil {
		s.refuse(w, r, s.readFailed(r, "task "+quote(h.ID()), err))
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// taskView reads the task of h: the inspector's details and the client's
// state. The inspector's states map to the client's one to one, but for
// waiting (the client's pending, or waiting for a continuation's parent)
// and held (waiting in a partition or a group, or scheduled or retrying
// while parked by a limit or a rate; Why says which), for which the
// client's state is read too.
func (s *server) taskView(ctx context.Context, h *client.Handle) (*taskView, error) {
	for range 3 {
		info, err := s.inspector.Task(ctx, h.ID())
		if err != nil {
			return nil, err
		}
		v := &taskView{TaskInfo: info, Kind: info.Kind, MaxAttempts: info.MaxAttempts}
		switch info.State {
		case inspect.StateUnknown:
			return nil, client.ErrNotFound
		case inspect.StateRunning:
			v.State = client.StateRunning
		case inspect.StateScheduled:
			v.State = client.StateScheduled
		case inspect.StateRetrying:
			v.State = client.StateRetrying
		case inspect.StateDead:
			v.State = client.StateDead
		case inspect.StateSucceeded:
			v.State = client.StateSucceeded
		case inspect.StateCancelled:
			v.State = client.StateCancelled
		default:
			st, err := h.State(ctx)
			if err != nil {
				return nil, err
			}
			if st.Final() || st == client.StateRunning {
				// It moved on between the reads: read it again.
				continue
			}
			v.State = st
		}
		return v, nil
	}
	// Still moving: the client's state, with the last details.
	return nil, fmt.Errorf("task %s changed state three times while it was read: %w", h.ID(), errMoving)
}

var errMoving = errors.New("task state changing")

// outcomeView is the answer of GET /v1/tasks/{id}/outcome.
type outcomeView struct {
	ID      string          `json:"id"`
	State   client.State    `json:"state"`
	Ended   bool            `json:"ended"`
	Attempt int             `json:"attempt,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// waitParam reads ?wait= (a Go duration, at most Config.MaxWait; more is
// cut to it). 0 when absent.
func (s *server) waitParam(r *http.Request) (time.Duration, *apiError) {
	q := r.URL.Query().Get("wait")
	if q == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(q)
	if err != nil || d < 0 {
		return 0, &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("wait %s: want a duration of 0 or more, such as \"30s\" (at most %v)", quote(q), s.cfg.MaxWait), Field: "wait"}
	}
	return min(d, s.cfg.MaxWait), nil
}

// outcome serves GET /v1/tasks/{id}/outcome?wait=: the task's result or
// error once it ended, waiting up to wait for that (client
// Handle.Outcome: a notification, not polling); else its state with ended
// false. A caller that goes away ends the wait.
func (s *server) outcome(w http.ResponseWriter, r *http.Request) {
	if id := r.PathValue("id"); id != "" && !strings.Contains(id, "/") {
		// /v1/tasks/{queue}/outcome: the task whose key is "outcome".
		s.getTask(w, withPath(r, id, "outcome"))
		return
	}
	h, e := s.openTask(r)
	if e != nil {
		s.refuse(w, r, e)
		return
	}
	wait, e := s.waitParam(r)
	if e != nil {
		s.refuse(w, r, e)
		return
	}
	out := outcomeView{ID: h.ID()}
	if wait > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		res, err := h.Outcome(ctx)
		cancel()
		var te *client.TaskError
		switch {
		case err == nil:
			s.writeOutcome(w, r, out, client.StateSucceeded, 0, res, "")
			return
		case errors.As(err, &te):
			s.writeOutcome(w, r, out, te.State, te.Attempt, nil, te.Message)
			return
		case r.Context().Err() != nil:
			return // the caller went away
		case ctx.Err() == nil || !errors.Is(err, context.DeadlineExceeded):
			s.refuse(w, r, s.readFailed(r, "task "+quote(h.ID()), err))
			return
		}
		// The wait ran out: the state, read below.
	}
	in, err := h.Info(r.Context())
	if err != nil {
		s.refuse(w, r, s.readFailed(r, "task "+quote(h.ID()), err))
		return
	}
	if !in.State.Final() {
		out.State = in.State
		writeJSON(w, http.StatusOK, out)
		return
	}
	s.writeOutcome(w, r, out, in.State, in.Attempt, in.Result, in.LastError)
}

// writeOutcome writes the outcome of an ended task: a succeeded one's
// result as JSON (codec.ToJSON), else its last attempt and error.
func (s *server) writeOutcome(w http.ResponseWriter, r *http.Request, out outcomeView, st client.State, attempt int, result []byte, msg string) {
	out.State, out.Ended = st, true
	if st == client.StateSucceeded {
		out.Result = json.RawMessage("null")
		if len(result) > 0 {
			js, err := codec.ToJSON(nil, result)
			if err != nil {
				s.log.Warn("httpapi: a result cannot be read", "id", out.ID, "err", err)
				s.refuse(w, r, &apiError{Status: http.StatusInternalServerError, Msg: "the task succeeded, but its result cannot be read as JSON: " + clip(err.Error(), 200)})
				return
			}
			out.Result = js
		}
	} else {
		out.Attempt, out.Error = attempt, msg
	}
	writeJSON(w, http.StatusOK, out)
}

// withPath is r as /v1/tasks/{queue}/{key} names the task queue/key.
func withPath(r *http.Request, queue, key string) *http.Request {
	r2 := r.Clone(r.Context())
	r2.SetPathValue("id", "")
	r2.SetPathValue("queue", queue)
	r2.SetPathValue("key", key)
	return r2
}

// cancel serves POST /v1/tasks/{id}/cancel: the state after the cancel
// (client Handle.Cancel): cancelled; running while the handler that runs
// it is being stopped (GET its outcome to see it end); or the final state
// it had already.
func (s *server) cancel(w http.ResponseWriter, r *http.Request) {
	if id := r.PathValue("id"); id != "" && !strings.Contains(id, "/") {
		// /v1/tasks/{queue}/cancel: the task whose key is "cancel",
		// which takes GET only.
		w.Header().Set("Allow", "GET, HEAD")
		s.refuse(w, r, &apiError{Status: http.StatusMethodNotAllowed, Msg: "method POST is not allowed here; use GET"})
		return
	}
	h, e := s.openTask(r)
	if e != nil {
		s.refuse(w, r, e)
		return
	}
	st, err := h.Cancel(r.Context())
	if err != nil && st == "" {
		if errors.Is(err, client.ErrNotFound) {
			s.refuse(w, r, s.readFailed(r, "task "+quote(h.ID()), err))
			return
		}
		s.log.Warn("httpapi: cancel failed", "id", h.ID(), "err", err)
		s.refuse(w, r, &apiError{Status: http.StatusServiceUnavailable, Msg: "the cancel failed in Redis and may have been applied; retrying it is safe", RetryAfter: retryAfter})
		return
	}
	if err != nil {
		s.log.Warn("httpapi: cancel", "id", h.ID(), "err", err)
	}
	writeJSON(w, http.StatusOK, struct {
		ID    string       `json:"id"`
		State client.State `json:"state"`
	}{h.ID(), st})
}
