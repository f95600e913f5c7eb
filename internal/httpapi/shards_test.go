package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
)

// A token scoped to a sharded queue reads and cancels the tasks it
// enqueued there (their ids name shards), and reads the queue, whose
// counts are the shards' sums with the breakdown, and each shard; another
// queue's token is refused the shards. Every answer matches openapi.json.
func TestShardedQueueThroughTheAPI(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	conf := &conformance{t: t, doc: doc, router: router, seen: map[string]map[int]bool{}, mu: sync.Mutex{}}
	env := testenv.Redis(t)
	c := testenv.Client(t, env)
	q, other := testenv.Queue(t), testenv.Queue(t)+"-other"
	names, err := c.DeclareShards(context.Background(), q, 3)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Client: c, Inspector: inspect.New(env.RDB), Tokens: []Token{
		{Name: "mine", Secret: "s-mine", Queues: []string{q}},
		{Name: "other", Secret: "s-other", Queues: []string{other}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	s := &oServer{t: t, url: srv.URL, hc: &http.Client{Transport: conf}}
	mine := []string{"Authorization", "Bearer s-mine"}
	theirs := []string{"Authorization", "Bearer s-other"}

	var ids []string
	for i := range 6 {
		r := s.want(201, "POST", "/v1/queues/"+q+"/tasks", `{"kind":"o.echo","args":{"V":`+string(rune('0'+i))+`}}`, "", mine...)
		ids = append(ids, r.get(t, "id"))
	}
	onShards := 0
	for _, id := range ids {
		qn, _, err := keys.SplitTaskID(id)
		if err != nil {
			t.Fatal(err)
		}
		if keys.IsShard(qn) {
			onShards++
		}
		s.want(200, "GET", "/v1/tasks/"+url.PathEscape(id), "", "", mine...)
		s.want(403, "GET", "/v1/tasks/"+url.PathEscape(id), "", "", theirs...)
	}
	if onShards != len(ids) {
		t.Errorf("%d of %d tasks on shards, want all", onShards, len(ids))
	}
	s.want(200, "POST", "/v1/tasks/"+url.PathEscape(ids[0])+"/cancel", "", "", mine...)

	// The queue: one, with the shards' sums and its parts.
	var got inspect.QueueInfo
	if err := json.Unmarshal(s.want(200, "GET", "/v1/queues/"+q, "", "", mine...).body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Queue != q || got.Waiting != int64(len(ids)-1) || len(got.Shards) != 4 {
		t.Errorf("GET /v1/queues/%s: %+v, want %d waiting over 4 parts", q, got, len(ids)-1)
	}
	// A shard, with the queue's token; not with another's.
	var one inspect.QueueInfo
	if err := json.Unmarshal(s.want(200, "GET", "/v1/queues/"+names[0], "", "", mine...).body, &one); err != nil {
		t.Fatal(err)
	}
	if one.Queue != names[0] || len(one.Shards) != 0 || one.Waiting != got.Shards[1].Waiting {
		t.Errorf("GET /v1/queues/%s: %+v, want the shard's own counts (%d waiting)", names[0], one, got.Shards[1].Waiting)
	}
	s.want(403, "GET", "/v1/queues/"+names[0], "", "", theirs...)
	// The list: the queue once, no shard.
	var list struct{ Queues []inspect.QueueInfo }
	if err := json.Unmarshal(s.want(200, "GET", "/v1/queues", "", "", mine...).body, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Queues) != 1 || list.Queues[0].Queue != q || len(list.Queues[0].Shards) != 4 {
		t.Errorf("GET /v1/queues with the queue's token: %+v, want %s once with its 4 parts", list.Queues, q)
	}
	// A name with '~' that is no shard's is a 400.
	r := s.call("GET", "/v1/queues/"+q+"~x", "", "", mine...)
	if r.status != 400 && r.status != 403 || !strings.Contains(string(r.body), "queue") {
		t.Errorf("GET /v1/queues/%s~x: %d %s, want 400 or 403", q, r.status, r.body)
	}
}
