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
// client, worker or group has used. A sharded queue's name gives its sums
// and shards (as GET /v1/queues lists it), a shard's name that shard's
// own counts; a token of the sharded queue may read both.
func (s *server) queue(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("queue")
	if e := s.authorize(r, name); e != nil {
		s.refuse(w, r, e)
		return
	}
	if keys.ValidatePhysicalQueue(name) != nil {
		s.refuse(w, r, &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("queue %s: %s, or a shard's name <queue>~<index>.<salt>", quote(name), nameRule), Field: "queue"})
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
	// A sharded queue is known by its shards as well (the plain queue is
	// set up only once a worker serves it).
	_, found := slices.BinarySearch(names, name)
	found = found || slices.ContainsFunc(names, func(n string) bool {
		q, _, ok := keys.ParseShard(n)
		return ok && q == name
	})
	q, err := s.inspector.Queue(r.Context(), name)
	if err != nil {
		s.refuse(w, r, s.readFailed(r, "queue "+quote(name), err))
		return
	}
	if !found && len(q.Shards) == 0 {
		s.refuse(w, r, s.readFailed(r, "queue "+quote(name), client.ErrNotFound))
		return
	}
	writeJSON(w, http.StatusOK, q)
}
