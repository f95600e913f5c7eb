package dashboard

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// get fetches path and returns the status and body.
func get(t testing.TB, hc *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestPages loads every page and its JSON twin on the known workload.
func TestPages(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv, hc := f.server(t, Options{Target: "redis://127.0.0.1:6379/0"})
	pages := []struct{ path, want string }{
		{"/", f.Waiting},
		{"/queues/" + f.Waiting, "deep"},
		{"/queues/" + f.Waiting + "?state=scheduled", "later"},
		{"/queues/" + f.Dead + "?state=dead", "boom"},
		{"/queues/" + f.Dead + "?state=dead&kind=dash.job", "boom"},
		{"/task?id=" + url.QueryEscape(f.Plain), "boom"},
		{"/task?id=" + url.QueryEscape(f.Deep), "Args"},
		// Every queue's groups, 100 a page: on a shared Redis other tests'
		// newer groups may fill the first page, so the fixture's group is
		// looked for on its queue's page below.
		{"/groups", "groups a page"},
		{"/groups?queue=" + f.Waiting, f.Group},
		{"/group?id=" + url.QueryEscape(f.Group), "pending 3"},
		{"/repeats", "Repeats"},
		{"/workers", f.Dead},
		{"/throttles", "Rate buckets"},
	}
	for _, p := range pages {
		code, body := get(t, hc, srv.URL+p.path)
		if code != http.StatusOK || !strings.Contains(body, p.want) {
			t.Errorf("GET %s: %d, want 200 with %q:\n%.2000s", p.path, code, p.want, body)
		}
		if !utf8.ValidString(body) {
			t.Errorf("GET %s: not valid UTF-8", p.path)
		}
		api := "/api" + p.path
		if p.path == "/" {
			api = "/api/overview"
		}
		code, body = get(t, hc, srv.URL+api)
		var j liveJSON
		if err := json.Unmarshal([]byte(body), &j); code != http.StatusOK || err != nil || len(j.Regions) == 0 {
			t.Errorf("GET %s: %d %v, regions %d:\n%.500s", api, code, err, len(j.Regions), body)
		}
	}
	// The forms the JSON twin renders lead back to the page, not to the
	// JSON.
	_, body := get(t, hc, srv.URL+"/api/queues/"+f.Dead+"?state=dead")
	var j liveJSON
	if err := json.Unmarshal([]byte(body), &j); err != nil {
		t.Fatal(err)
	}
	if want := `name="back" value="/queues/` + f.Dead + `?state=dead"`; !strings.Contains(j.Regions["tasks"], want) {
		t.Errorf("the JSON's forms do not lead back to the page (%s):\n%.2000s", want, j.Regions["tasks"])
	}
	// Errors: a bad state, a bad cursor, a bad id.
	for _, p := range []string{"/queues/" + f.Waiting + "?state=nope", "/queues/" + f.Waiting + "?state=dead&cursor=x", "/task?id=nope", "/queues/bad%20name", "/group?id=nope"} {
		if code, _ := get(t, hc, srv.URL+p); code != http.StatusBadRequest {
			t.Errorf("GET %s: %d, want 400", p, code)
		}
	}
	if code, _ := get(t, hc, srv.URL+"/task?id="+url.QueryEscape(f.Waiting+"/gone")); code != http.StatusNotFound {
		t.Errorf("unknown task: %d, want 404", code)
	}
	// A lookup by id leads to the task's page.
	resp, err := hc.Get(srv.URL + "/queues/" + f.Dead + "?id=plain")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/task?id="+url.QueryEscape(f.Plain) {
		t.Errorf("lookup: %d to %q", resp.StatusCode, loc)
	}
	// The static files.
	for _, p := range []string{"/static/app.css", "/static/app.js"} {
		if code, body := get(t, hc, srv.URL+p); code != http.StatusOK || len(body) < 100 {
			t.Errorf("GET %s: %d", p, code)
		}
	}
}
