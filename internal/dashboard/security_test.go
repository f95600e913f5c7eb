package dashboard

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

var tagRe = regexp.MustCompile(`<(/?)([a-zA-Z][a-zA-Z0-9]*)([^<>]*)>`)

var voidTags = map[string]bool{"meta": true, "link": true, "input": true, "br": true, "img": true, "hr": true, "polyline": true}

// checkHTML checks that body is well-formed as this package writes HTML:
// every element closed in order, no '<' or '>' outside of tags but in
// comments, one script element (app.js), and no attribute that runs
// script.
func checkHTML(body string) error {
	var stack []string
	scripts := 0
	rest := body
	if i := strings.Index(rest, "<!DOCTYPE html>"); i == 0 {
		rest = rest[len("<!DOCTYPE html>"):]
	}
	locs := tagRe.FindAllStringSubmatchIndex(rest, -1)
	prev := 0
	for _, l := range locs {
		if text := rest[prev:l[0]]; strings.ContainsAny(text, "<>") {
			return fmt.Errorf("markup in text at %d: %.80q", prev, text)
		}
		prev = l[1]
		closing, name, attrs := rest[l[2]:l[3]] == "/", strings.ToLower(rest[l[4]:l[5]]), rest[l[6]:l[7]]
		if strings.Contains(strings.ToLower(attrs), " on") && regexp.MustCompile(`(?i)\son[a-z]+=`).MatchString(attrs) {
			return fmt.Errorf("an event handler attribute: <%s%s>", name, attrs)
		}
		switch {
		case closing:
			if len(stack) == 0 || stack[len(stack)-1] != name {
				return fmt.Errorf("</%s> closes %v", name, stack)
			}
			stack = stack[:len(stack)-1]
		case voidTags[name] || strings.HasSuffix(attrs, "/"):
		default:
			if name == "script" {
				scripts++
				if !strings.Contains(attrs, `/static/app.js"`) {
					return fmt.Errorf("a script element: <script%s>", attrs)
				}
			}
			stack = append(stack, name)
		}
	}
	if text := rest[prev:]; strings.ContainsAny(text, "<>") {
		return fmt.Errorf("markup in text at the end: %.80q", text)
	}
	if len(stack) > 0 {
		return fmt.Errorf("unclosed: %v", stack)
	}
	if scripts > 1 {
		return fmt.Errorf("%d script elements", scripts)
	}
	return nil
}

// Hostile kinds, ids, args, errors and metadata render as text: no markup
// of theirs reaches a page, invalid UTF-8 comes out as U+FFFD, lists cut
// long values (the task page shows them whole on request).
func TestHostileValuesRenderAsText(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv, hc := f.server(t, Options{})
	escaped := "&lt;script&gt;alert(1)&lt;/script&gt;"
	for _, p := range []struct {
		path    string
		maxSize int // bytes; 0: no bound
	}{
		{"/", 0},
		{"/queues/" + f.Waiting, 60 << 10},
		{"/queues/" + f.Waiting + "?kind=dash.job", 60 << 10},
		{"/queues/" + f.Dead + "?state=dead", 60 << 10},
		{"/task?id=" + url.QueryEscape(f.Hostile), 0},
		{"/task?id=" + url.QueryEscape(f.Hostile) + "&full=1", 0},
		{"/task?id=" + url.QueryEscape(f.Deep), 0},
		{"/task?id=" + url.QueryEscape(f.Deep) + "&full=1", 0},
	} {
		code, body := get(t, hc, srv.URL+p.path)
		if code != http.StatusOK {
			t.Errorf("GET %s: %d", p.path, code)
			continue
		}
		if low := strings.ToLower(body); strings.Contains(low, "<script>alert") || strings.Contains(body, `"onmouseover`) {
			t.Errorf("GET %s: unescaped hostile markup", p.path)
		}
		if err := checkHTML(body); err != nil {
			t.Errorf("GET %s: %v", p.path, err)
		}
		if !utf8.ValidString(body) {
			t.Errorf("GET %s: invalid UTF-8", p.path)
		}
		if p.maxSize > 0 && len(body) > p.maxSize {
			t.Errorf("GET %s: %d bytes; a list must cut long values", p.path, len(body))
		}
		if p.path != "/" && !strings.Contains(body, escaped) {
			t.Errorf("GET %s: the hostile value does not appear as text", p.path)
		}
	}
	// The raw entry's hostile kind is listed as text, its invalid bytes
	// replaced.
	_, body := get(t, hc, srv.URL+"/queues/"+f.Waiting)
	if !strings.Contains(body, "&#34;onmouseover=alert(1) x=&#34;bad\uFFFD") {
		t.Errorf("the raw entry's kind is not shown as text with U+FFFD")
	}
	// The dead task's error: cut in the list, whole on the task page with
	// full=1 only.
	_, body = get(t, hc, srv.URL+"/task?id="+url.QueryEscape(f.Hostile))
	if strings.Contains(body, hostileLong) || !strings.Contains(body, "Show all") {
		t.Errorf("the task page shows a 100 KB error whole, or offers no Show all")
	}
	_, body = get(t, hc, srv.URL+"/task?id="+url.QueryEscape(f.Hostile)+"&full=1")
	if !strings.Contains(body, hostileLong) {
		t.Errorf("full=1 does not show the whole error")
	}
	// The deep args come out as JSON, indented, whole.
	_, body = get(t, hc, srv.URL+"/task?id="+url.QueryEscape(f.Deep)+"&full=1")
	if strings.Count(body, `&#34;x&#34;: {`) != 20 {
		t.Errorf("deep args: %d levels shown, want 20", strings.Count(body, `&#34;x&#34;: {`))
	}
	// The JSON twins escape markup too (encoding/json writes \u003c).
	_, body = get(t, hc, srv.URL+"/api/queues/"+f.Dead+"?state=dead")
	if strings.Contains(body, "<script>alert") {
		t.Errorf("the JSON has raw markup")
	}
}

// Security headers on every answer: pages, JSON, static files, errors.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv, hc := f.server(t, Options{})
	for _, p := range []string{"/", "/api/overview", "/static/app.js", "/task?id=bad", "/nope"} {
		resp, err := hc.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") ||
			h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") == "" {
			t.Errorf("GET %s: headers %v", p, h)
		}
	}
}

// Authentication: a bearer token, ?token= once (then a cookie), basic
// auth; nothing else gets in. Without either, only a loopback address.
func TestAuth(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv, hc := f.server(t, Options{Token: "t0ken-s3cret", User: "ops", Password: "pa55"})
	status := func(req *http.Request, c *http.Client) int {
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	req := func(path string, set func(r *http.Request)) *http.Request {
		r, _ := http.NewRequest("GET", srv.URL+path, nil)
		if set != nil {
			set(r)
		}
		return r
	}
	cases := []struct {
		name string
		set  func(r *http.Request)
		want int
	}{
		{"nothing", nil, http.StatusUnauthorized},
		{"bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer t0ken-s3cret") }, http.StatusOK},
		{"wrong bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer t0ken-s3cre") }, http.StatusUnauthorized},
		{"basic", func(r *http.Request) { r.SetBasicAuth("ops", "pa55") }, http.StatusOK},
		{"wrong password", func(r *http.Request) { r.SetBasicAuth("ops", "pa56") }, http.StatusUnauthorized},
		{"token as password", func(r *http.Request) { r.SetBasicAuth("ops", "t0ken-s3cret") }, http.StatusUnauthorized},
		{"token cookie itself", func(r *http.Request) { r.AddCookie(&http.Cookie{Name: authCookie, Value: "t0ken-s3cret"}) }, http.StatusUnauthorized},
	}
	for _, c := range cases {
		if got := status(req("/workers", c.set), &http.Client{}); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	// ?token= once: a cookie, and a redirect to the page without it.
	resp, err := hc.Get(srv.URL + "/workers?token=t0ken-s3cret&x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || strings.Contains(loc, "token") || !strings.HasPrefix(loc, "/workers") {
		t.Fatalf("?token=: %d to %q", resp.StatusCode, loc)
	}
	for _, c := range resp.Cookies() {
		if c.Name == authCookie && (!c.HttpOnly || c.Value == "t0ken-s3cret") {
			t.Errorf("auth cookie %+v: not HttpOnly, or the token itself", c)
		}
	}
	if code, _ := get(t, hc, srv.URL+"/workers"); code != http.StatusOK {
		t.Errorf("with the cookie: %d", code)
	}
	if code, _ := get(t, &http.Client{}, srv.URL+"/workers?token=wrong"); code != http.StatusUnauthorized {
		t.Errorf("?token=wrong: %d", code)
	}

	// The loopback rule.
	for _, addr := range []string{"0.0.0.0:8080", ":8080", "[::]:8080", "192.0.2.1:80", "example.com:80", "nonsense"} {
		if _, err := New(f.in, Options{Addr: addr}); !errors.Is(err, ErrNoAuth) {
			t.Errorf("New on %s without auth: %v", addr, err)
		}
		if _, err := New(f.in, Options{Addr: addr, Token: "x"}); err != nil && addr != "nonsense" {
			t.Errorf("New on %s with a token: %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:8080", "[::1]:8080", "localhost:8080", "127.1.2.3:0"} {
		if _, err := New(f.in, Options{Addr: addr}); err != nil {
			t.Errorf("New on %s: %v", addr, err)
		}
	}
	if _, err := New(f.in, Options{Addr: "127.0.0.1:0", User: "u"}); err == nil {
		t.Error("a user without a password accepted")
	}
}

// Without authentication, a request whose Host is not loopback (a page of
// another site resolved to 127.0.0.1: DNS rebinding) is refused.
func TestLoopbackHostOnly(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv, hc := f.server(t, Options{})
	for host, want := range map[string]int{"evil.example:80": http.StatusForbidden, "evil.example": http.StatusForbidden,
		"10.0.0.1:8080": http.StatusForbidden, "localhost:8080": http.StatusOK, "127.0.0.1:1": http.StatusOK, "[::1]:8080": http.StatusOK} {
		req, _ := http.NewRequest("GET", srv.URL+"/workers", nil)
		req.Host = host
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: %d, want %d", host, resp.StatusCode, want)
		}
	}
	// With a token, the Host does not matter (the token does).
	srv2, _ := f.server(t, Options{Token: "tk"})
	req, _ := http.NewRequest("GET", srv2.URL+"/workers", nil)
	req.Host = "dash.example.com"
	req.Header.Set("Authorization", "Bearer tk")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("with a token and another Host: %d", resp.StatusCode)
	}
}

// Mounted under a base path, every link and form stays under it.
func TestBasePath(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv, hc := f.server(t, Options{BasePath: "/ui"})
	code, body := get(t, hc, srv.URL+"/ui/queues/"+f.Dead+"?state=dead")
	if code != http.StatusOK {
		t.Fatalf("%d", code)
	}
	for _, m := range regexp.MustCompile(`(?:href|action|src|data-live)="([^"]*)"`).FindAllStringSubmatch(body, -1) {
		if u := m[1]; !strings.HasPrefix(u, "/ui/") && !strings.HasPrefix(u, "#") && !strings.HasPrefix(u, "data:") {
			t.Errorf("a link off the base path: %q", u)
		}
	}
	tok := csrfField.FindStringSubmatch(body)[1]
	resp := post(t, hc, srv.URL+"/ui/actions/pause", url.Values{"csrf": {tok}, "queue": {f.Dead}, "back": {"/ui/queues/" + f.Dead}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/queues/"+f.Dead {
		t.Errorf("action under /ui: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	r, err := hc.Get(srv.URL + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode/100 != 3 || r.Header.Get("Location") != "/ui/" {
		t.Errorf("/ui: %d to %q, want a redirect to /ui/", r.StatusCode, r.Header.Get("Location"))
	}
}
