package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
)

var csrfField = regexp.MustCompile(`name="csrf" value="([A-Za-z0-9_-]+)"`)

// csrfOf loads page and returns the CSRF token its forms carry.
func csrfOf(t testing.TB, hc *http.Client, page string) string {
	t.Helper()
	code, body := get(t, hc, page)
	m := csrfField.FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		t.Fatalf("GET %s: %d, no CSRF field", page, code)
	}
	return m[1]
}

// post submits an action's form and returns the response (not followed).
func post(t testing.TB, hc *http.Client, u string, form url.Values) *http.Response {
	t.Helper()
	resp, err := hc.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// Each action changes what the inspector reads, and answers with a
// redirect back and a flash message.
func TestActions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	srv, hc := f.server(t, Options{})
	deadPage := srv.URL + "/queues/" + f.Dead + "?state=dead"
	tok := csrfOf(t, hc, deadPage)
	back := "/queues/" + f.Dead + "?state=dead"

	// Retry a dead task (its queue paused, so that no worker takes it at
	// once): it leaves the dead list and waits; resumed, it dies again (its
	// handler fails it permanently). The pause binds a worker once it has
	// read the flag (on the notice, or its next poll: up to 250 ms later),
	// so the retry waits until the queue's worker reports it paused.
	if err := f.in.Pause(ctx, f.Dead); err != nil {
		t.Fatal(err)
	}
	f.waitPaused(t, f.Dead)
	resp := post(t, hc, srv.URL+"/actions/retry", url.Values{"csrf": {tok}, "id": {f.Plain}, "back": {back}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != back {
		t.Fatalf("retry: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	_, body := get(t, hc, deadPage)
	if !strings.Contains(body, "retried "+f.Plain) {
		t.Errorf("no flash after retry:\n%.3000s", body)
	}
	if strings.Contains(body, `value="`+f.Plain+`"`) {
		t.Errorf("the retried task is still in the dead list")
	}
	if ti, err := f.in.Task(ctx, f.Plain); err != nil || ti.State != inspect.StateWaiting {
		t.Fatalf("after retry: %+v, %v", ti, err)
	}
	if err := f.in.Resume(ctx, f.Dead); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the retried task to die again", func() bool {
		ti, err := f.in.Task(ctx, f.Plain)
		return err == nil && ti.State == inspect.StateDead
	})
	// The flash is shown once.
	if _, body := get(t, hc, deadPage); strings.Contains(body, "retried "+f.Plain) {
		t.Errorf("the flash again on the next page")
	}

	// Pause, then resume.
	resp = post(t, hc, srv.URL+"/actions/pause", url.Values{"csrf": {tok}, "queue": {f.Waiting}, "back": {"/queues/" + f.Waiting}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("pause: %d", resp.StatusCode)
	}
	if q, err := f.in.Queue(ctx, f.Waiting); err != nil || !q.Paused {
		t.Fatalf("after pause: %+v, %v", q, err)
	}
	if _, body := get(t, hc, srv.URL+"/queues/"+f.Waiting); !strings.Contains(body, "Resume queue") || !strings.Contains(body, "paused") {
		t.Errorf("the paused queue's page offers no resume")
	}
	post(t, hc, srv.URL+"/actions/resume", url.Values{"csrf": {tok}, "queue": {f.Waiting}})
	if q, err := f.in.Queue(ctx, f.Waiting); err != nil || q.Paused {
		t.Fatalf("after resume: %+v, %v", q, err)
	}

	// Cancel a scheduled task.
	post(t, hc, srv.URL+"/actions/cancel", url.Values{"csrf": {tok}, "id": {f.Later}})
	if ti, err := f.in.Task(ctx, f.Later); err != nil || ti.State != inspect.StateCancelled {
		t.Fatalf("after cancel: %+v, %v", ti, err)
	}

	// Purge one dead task, then retry-all and purge-all.
	post(t, hc, srv.URL+"/actions/purge", url.Values{"csrf": {tok}, "id": {f.Hostile}})
	if ti, err := f.in.Task(ctx, f.Hostile); err != nil || ti.State != inspect.StateUnknown {
		t.Fatalf("after purge: %+v, %v", ti, err)
	}
	post(t, hc, srv.URL+"/actions/purge-all", url.Values{"csrf": {tok}, "queue": {f.Dead}})
	if q, err := f.in.Queue(ctx, f.Dead); err != nil || q.Dead != 0 {
		t.Fatalf("after purge-all: %+v, %v", q, err)
	}

	// Delete a queue: refused without the name typed again, and while it
	// holds tasks unless forced.
	post(t, hc, srv.URL+"/actions/delete-queue", url.Values{"csrf": {tok}, "queue": {f.Waiting}, "confirm": {"nope"}})
	if _, body := get(t, hc, srv.URL+"/"); !strings.Contains(body, "to confirm") {
		t.Errorf("no error for a wrong confirmation")
	}
	post(t, hc, srv.URL+"/actions/delete-queue", url.Values{"csrf": {tok}, "queue": {f.Waiting}, "confirm": {f.Waiting}})
	if q, _ := f.in.Queue(ctx, f.Waiting); q.Waiting == 0 {
		t.Fatalf("a queue with tasks deleted without force: %+v", q)
	}
	resp = post(t, hc, srv.URL+"/actions/delete-queue", url.Values{"csrf": {tok}, "queue": {f.Waiting}, "confirm": {f.Waiting}, "force": {"1"},
		"back": {"/queues/" + f.Waiting}})
	if resp.Header.Get("Location") != "/" {
		t.Errorf("after delete: back to %q, want the overview", resp.Header.Get("Location"))
	}
	if q, _ := f.in.Queue(ctx, f.Waiting); q.Waiting != 0 || q.Scheduled != 0 {
		t.Fatalf("after forced delete: %+v", q)
	}

	// The way back never leaves the site.
	for _, b := range []string{"https://evil.example/", "//evil.example/", "/\\evil", "javascript:alert(1)"} {
		resp := post(t, hc, srv.URL+"/actions/resume", url.Values{"csrf": {tok}, "queue": {f.Dead}, "back": {b}})
		if resp.Header.Get("Location") != "/" {
			t.Errorf("back %q: redirected to %q", b, resp.Header.Get("Location"))
		}
	}
	// An unknown action.
	if resp := post(t, hc, srv.URL+"/actions/nope", url.Values{"csrf": {tok}}); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown action: %d", resp.StatusCode)
	}
	// A GET of an action is not one.
	if code, _ := get(t, hc, srv.URL+"/actions/pause?queue="+f.Dead+"&csrf="+tok); code != http.StatusMethodNotAllowed {
		t.Errorf("GET of an action: %d", code)
	}
}

// A POST without the CSRF token of its cookie is refused, and changes
// nothing; so is any POST in read-only mode, whose pages render no action.
func TestCSRFAndReadOnly(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	srv, hc := f.server(t, Options{})
	tok := csrfOf(t, hc, srv.URL+"/queues/"+f.Dead+"?state=dead")
	other := csrfOf(t, &http.Client{}, srv.URL+"/queues/"+f.Dead+"?state=dead") // another browser's token
	for name, form := range map[string]url.Values{
		"no token":          {"queue": {f.Waiting}},
		"wrong token":       {"queue": {f.Waiting}, "csrf": {strings.Repeat("A", len(tok))}},
		"another's token":   {"queue": {f.Waiting}, "csrf": {other}},
		"token of one byte": {"queue": {f.Waiting}, "csrf": {tok[:1]}},
	} {
		if resp := post(t, hc, srv.URL+"/actions/pause", form); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, resp.StatusCode)
		}
	}
	// Without the cookie, the field alone does not do.
	if resp := post(t, &http.Client{CheckRedirect: hc.CheckRedirect}, srv.URL+"/actions/pause", url.Values{"queue": {f.Waiting}, "csrf": {tok}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("field without cookie: %d, want 403", resp.StatusCode)
	}
	if q, _ := f.in.Queue(ctx, f.Waiting); q.Paused {
		t.Fatal("a refused POST paused the queue")
	}
	// The header works as the field does (for scripts).
	req, _ := http.NewRequest("POST", srv.URL+"/actions/pause", strings.NewReader(url.Values{"queue": {f.Waiting}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-CSRF-Token", tok)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if q, _ := f.in.Queue(ctx, f.Waiting); resp.StatusCode != http.StatusSeeOther || !q.Paused {
		t.Fatalf("POST with the header: %d, paused %v", resp.StatusCode, q.Paused)
	}
	// The cookie is SameSite=Strict and HttpOnly.
	r0, err := (&http.Client{}).Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	r0.Body.Close()
	found := false
	for _, c := range r0.Cookies() {
		if c.Name == csrfCookie {
			found = c.HttpOnly && c.SameSite == http.SameSiteStrictMode
		}
	}
	if !found {
		t.Errorf("CSRF cookie not HttpOnly SameSite=Strict: %v", r0.Header["Set-Cookie"])
	}

	ro, rhc := f.server(t, Options{ReadOnly: true})
	for _, p := range []string{"/queues/" + f.Dead + "?state=dead", "/queues/" + f.Waiting, "/task?id=" + url.QueryEscape(f.Plain)} {
		_, body := get(t, rhc, ro.URL+p)
		if strings.Contains(body, `method="post"`) || strings.Contains(body, "/actions/") {
			t.Errorf("read-only %s renders actions", p)
		}
		if !strings.Contains(body, "read-only") {
			t.Errorf("read-only %s does not say so", p)
		}
	}
	if resp := post(t, rhc, ro.URL+"/actions/resume", url.Values{"queue": {f.Waiting}, "csrf": {tok}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("read-only POST: %d, want 403", resp.StatusCode)
	}
	if q, _ := f.in.Queue(ctx, f.Waiting); !q.Paused {
		t.Fatal("a read-only POST resumed the queue")
	}
}
