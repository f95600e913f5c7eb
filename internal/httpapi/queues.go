package httpapi

import (
	"fmt"
	"net/http"
	"slices"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// queues serves GET /v1/queues: the counts of every queue (the
// inspector's), or of the token's queues only when it is limited to some.
func (s *server) queues(w http.ResponseWriter, r *http.Request) {
	tok, e := s.authenticate(r)
	if e != nil {
		s.refuse(w, r, e)
		return
	}
	qs, err := s.inspector.Queues(r.Context())
	if err != nil {
		s.refuse(w, r, s.readFailed(r, "queues", err))
		return
	}
	qs = slices.DeleteFunc(qs, func(q inspect.QueueInfo) bool { return !tok.allows(q.Queue) })
	if qs == nil {
		qs = []inspect.QueueInfo{}
	}
	writeJSON(w, http.StatusOK, struct {
		Queues []inspect.QueueInfo `json:"queues"`
	}{qs})
}

// queue serves GET /v1/queues/{queue}: its counts; 404 for a queue no
// client, worker or group has used.
func (s *server) queue(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("queue")
	if e := s.authorize(r, name); e != nil {
		s.refuse(w, r, e)
		return
	}
	if keys.ValidateName("queue", name) != nil {
		s.refuse(w, r, &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("queue %s: %s", quote(name), nameRule), Field: "queue"})
		return
	}
	if dotName(name) {
		s.refuse(w, r, &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("queue %s: %s", quote(name), dotRule), Field: "queue"})
		return
	}
	eng, _ := engine.Of(s.client)
	names, err := store.QueueNames(r.Context(), eng.Redis())
	if err != nil {
		s.refuse(w, r, s.readFailed(r, "queue", err))
		return
	}
	if _, found := slices.BinarySearch(names, name); !found {
		s.refuse(w, r, s.readFailed(r, "queue "+quote(name), client.ErrNotFound))
		return
	}
	q, err := s.inspector.Queue(r.Context(), name)
	if err != nil {
		s.refuse(w, r, s.readFailed(r, "queue "+quote(name), err))
		return
	}
	writeJSON(w, http.StatusOK, q)
}
