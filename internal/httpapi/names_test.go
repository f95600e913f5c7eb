package httpapi

import (
	"net/http"
	"testing"

	"github.com/taskfleet/async/internal/testenv"
)

// TestDotNames: "." and ".." are refused as a queue, a task's key or a
// group's id, in a body or a path, with a 400 naming the field; a path
// with a dot or empty segment is refused in JSON, not redirected.
func TestDotNames(t *testing.T) {
	t.Parallel()
	a := newAPI(t, testenv.Redis(t), Config{})
	q := a.queue
	for _, c := range []struct {
		method, path string
		body         any
		field        string
	}{
		{"POST", "/v1/queues/%2e%2e/tasks", map[string]any{"kind": "k"}, "queue"},
		{"POST", "/v1/queues/%2E/tasks", map[string]any{"kind": "k"}, "queue"},
		{"POST", "/v1/queues/%2e%2e/tasks/batch", []any{map[string]any{"kind": "k"}}, "tasks[0].queue"},
		{"POST", "/v1/queues/" + q + "/tasks", map[string]any{"kind": "k", "id": ".."}, "id"},
		{"POST", "/v1/queues/" + q + "/tasks", map[string]any{"kind": "k", "id": "."}, "id"},
		{"POST", "/v1/queues/" + q + "/tasks/batch", []any{map[string]any{"kind": "k", "id": "a"}, map[string]any{"kind": "k", "id": ".."}}, "tasks[1].id"},
		{"POST", "/v1/groups", map[string]any{"id": "..", "queue": q, "tasks": []any{map[string]any{"kind": "k"}}}, "id"},
		{"POST", "/v1/groups", map[string]any{"queue": "..", "tasks": []any{map[string]any{"kind": "k"}}}, "queue"},
		{"POST", "/v1/groups", map[string]any{"queue": q, "tasks": []any{map[string]any{"kind": "k", "queue": "."}}}, "tasks[0].queue"},
		{"GET", "/v1/tasks/" + q + "%2F..", nil, "id"},
		{"GET", "/v1/tasks/%2e%2e/k", nil, "id"},
		{"POST", "/v1/tasks/" + q + "/%2e/cancel", nil, "id"},
		{"GET", "/v1/groups/group:" + q + "%2F..", nil, "id"},
		{"GET", "/v1/groups/" + q + "/%2e%2e/outcome", nil, "id"},
		{"GET", "/v1/queues/%2e%2e", nil, "queue"},
		// Unclean paths: not redirected (ServeMux would, in HTML).
		{"GET", "/v1/tasks/" + q + "/..", nil, "path"},
		{"GET", "/v1/tasks/" + q + "/./k", nil, "path"},
		{"POST", "/v1/queues/" + q + "/tasks/../tasks", map[string]any{"kind": "k"}, "path"},
		{"GET", "/v1//queues", nil, "path"},
	} {
		r := a.do(c.method, c.path, c.body)
		if r.Status != http.StatusBadRequest || r.field() != c.field || r.msg() == "" || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %s %s, want a JSON 400 naming %q", c.method, c.path, r.Status, r.Header.Get("Content-Type"), r.Body, c.field)
		}
	}
}
