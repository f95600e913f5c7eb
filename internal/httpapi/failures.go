package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/taskfleet/async/client"
)

// retryAfter is the Retry-After of a 503, in seconds.
const retryAfter = 1

// writeFailed is the answer to a client call that writes tasks (Enqueue,
// EnqueueMany, and the groups' calls) and failed: bad input the client
// found (400, or 413 for a payload over its limit) under the field prefix
// (a batch's "tasks[i]" when the client names the spec); Redis out of
// memory (503: nothing of the failed write was added); anything else from
// Redis (503: the tasks may have been added, and a retry of tasks with
// ids is safe). 503s are logged at warn. many says the call wrote several
// tasks.
func (s *server) writeFailed(r *http.Request, prefix string, many bool, err error) *apiError {
	if many {
		// EnqueueMany names the bad spec: "spec 3: ...".
		if rest, ok := strings.CutPrefix(err.Error(), "spec "); ok {
			if n, _, ok := strings.Cut(rest, ":"); ok {
				if i, err := strconv.Atoi(n); err == nil && i >= 0 {
					prefix = fmt.Sprintf("tasks[%d]", i)
				}
			}
		}
	}
	switch {
	case errors.Is(err, client.ErrPayloadTooLarge):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Msg: clip(err.Error(), 200), Field: join(prefix, "args")}
	case badInput(err):
		return &apiError{Status: http.StatusBadRequest, Msg: clip(err.Error(), 200), Field: prefix}
	}
	s.log.Warn("httpapi: enqueue failed", "method", r.Method, "path", clip(r.URL.EscapedPath(), 200), "err", err)
	if errors.Is(err, client.ErrRedisFull) {
		msg := "Redis is out of memory and refused the write: the task was not added; retry later"
		if many {
			msg = "Redis is out of memory and refused a write: tasks sent in earlier writes of the call (500 a write) may have been added; retrying is safe when every task has an \"id\" (an existing id adds nothing)"
		}
		return &apiError{Status: http.StatusServiceUnavailable, Msg: msg, RetryAfter: retryAfter}
	}
	msg := "writing to Redis failed: the task may have been added; retrying is safe when the task has an \"id\" (an existing id adds nothing)"
	if many {
		msg = "writing to Redis failed: tasks may have been added; retrying is safe when every task has an \"id\" (an existing id adds nothing)"
	}
	return &apiError{Status: http.StatusServiceUnavailable, Msg: msg, RetryAfter: retryAfter}
}

// badInput reports whether err is the client's refusal of a task it
// checked before Redis was reached. The API checks every field first
// (spec), so only what an EnqueueHook refuses or a rule of the client the
// API does not know yet ends here.
func badInput(err error) bool {
	if errors.Is(err, client.ErrInvalidName) {
		return true
	}
	m := err.Error()
	return strings.Contains(m, "EnqueueOpts.") || strings.Contains(m, "refused by the enqueue hook")
}

// noAnswer is the refusal that writes nothing: the request's context
// ended, so its caller went away, or the server that ended it answers
// itself (cmd/worker's 503 of a drain), which it can only while no
// response was begun.
var noAnswer = &apiError{Status: 499, Msg: "the request ended"}

// readFailed is the answer to a client or inspector call that reads (or
// cancels) and failed: 404 for an unknown one (what names it: "task
// \"q/k\""), 400 for a bad name, noAnswer when r's context ended, else
// 503 (logged at warn).
func (s *server) readFailed(r *http.Request, what string, err error) *apiError {
	switch {
	case errors.Is(err, client.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Msg: "no " + what}
	case errors.Is(err, client.ErrInvalidName):
		return &apiError{Status: http.StatusBadRequest, Msg: clip(err.Error(), 200), Field: "id"}
	case r.Context().Err() != nil:
		// The caller went away, or the server ended the request (cmd/worker
		// does as it drains, and answers a request left unanswered itself):
		// nothing is written.
		return noAnswer
	}
	s.log.Warn("httpapi: reading from Redis failed", "method", r.Method, "path", clip(r.URL.EscapedPath(), 200), "err", err)
	return &apiError{Status: http.StatusServiceUnavailable, Msg: "reading from Redis failed; retry later", RetryAfter: retryAfter}
}
