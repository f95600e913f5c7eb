package httpapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/taskfleet/async/internal/testenv"
)

// TestStrictEnvelope: a task object's fields are read as strictly as its
// args: exact names, each once, no invalid UTF-8 or lone surrogate, no key
// twice in meta; a 400 naming the field, for a single task, a batch's and
// a group's member.
func TestStrictEnvelope(t *testing.T) {
	t.Parallel()
	a := newAPI(t, testenv.Redis(t), Config{})
	for _, c := range []struct{ task, field string }{
		{`{"kind":"k","kind":"x"}`, "kind"},
		{`{"kind":"k","args":{},"args":{"a":1}}`, "args"},
		{`{"KIND":"k"}`, "KIND"},
		{`{"kind":"k","Meta":{}}`, "Meta"},
		{`{"kind":"k","\u006bind":"x"}`, "kind"},
		{"{\"kind\":\"k\xff\"}", "kind"},
		{"{\"kind\":\"k\",\"meta\":{\"a\":\"v\xff\"}}", "meta.a"},
		{`{"kind":"k","meta":{"a":"1","a":"2"}}`, "meta"},
		{`{"kind":"k","id":"a\ud800"}`, "id"},
		{"{\"kind\":\"k\",\"rate_key\":\"r\xc3\"}", "rate_key"},
	} {
		good := `{"kind":"k"}`
		for _, p := range []struct{ path, body, prefix string }{
			{"/v1/queues/" + a.queue + "/tasks", c.task, ""},
			{"/v1/queues/" + a.queue + "/tasks/batch", "[" + good + "," + c.task + "]", "tasks[1]"},
			{"/v1/queues/" + a.queue + "/tasks/batch", good + "\n" + c.task + "\n", "tasks[1]"},
			{"/v1/groups", `{"queue":"` + a.queue + `","tasks":[` + good + "," + c.task + "]}", "tasks[1]"},
		} {
			want := join(p.prefix, c.field)
			r := a.do("POST", p.path, p.body)
			if r.Status != http.StatusBadRequest || !strings.HasPrefix(r.field(), want) || r.msg() == "" {
				t.Errorf("POST %s %q: %d %s; want 400 naming %q", p.path, p.body, r.Status, r.Body, want)
			}
		}
	}
	// The exact names still pass, in any order, with escapes in values.
	a.do("POST", "/v1/queues/"+a.queue+"/tasks", `{"meta":{"é":"\u00e9"},"kind":"k","id":"ok"}`).want(t, http.StatusCreated)
}
