package dashboard

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A page of another site on the same host (another port: cookies are not
// kept apart by port) can neither post with the browser's token, which
// the browser marks cross-site, nor plant a CSRF cookie of its own and
// post its value: the form's token is not the cookie's value.
func TestCrossOriginPosts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	srv, hc := f.server(t, Options{})
	tok := csrfOf(t, hc, srv.URL+"/queues/"+f.Dead+"?state=dead")
	u, _ := url.Parse(srv.URL)
	pause := url.Values{"queue": {f.Waiting}, "csrf": {tok}}.Encode()

	postWith := func(hc *http.Client, body string, header map[string]string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+"/actions/pause", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for name, h := range map[string]map[string]string{
		"Sec-Fetch-Site cross-site": {"Sec-Fetch-Site": "cross-site"},
		"Sec-Fetch-Site same-site":  {"Sec-Fetch-Site": "same-site"},
		"Origin of another port":    {"Origin": "http://" + u.Hostname() + ":3000"},
		"Origin of another host":    {"Origin": "http://evil.example"},
	} {
		if code := postWith(hc, pause, h); code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, code)
		}
	}

	// A planted cookie (as a page on another port can set one, with a
	// deeper Path so that it is sent first) and its own value as the token.
	planted := strings.Repeat("P", 43)
	jar, _ := cookiejar.New(nil)
	jar.SetCookies(u, []*http.Cookie{{Name: csrfCookie, Value: planted, Path: "/actions/"}})
	evil := &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: hc.CheckRedirect}
	t.Cleanup(evil.CloseIdleConnections)
	if code := postWith(evil, url.Values{"queue": {f.Waiting}, "csrf": {planted}}.Encode(), nil); code != http.StatusForbidden {
		t.Errorf("planted cookie and its value as the token: %d, want 403", code)
	}
	// Nor does the planted cookie work with a token the dashboard gave it
	// for another cookie.
	if code := postWith(evil, url.Values{"queue": {f.Waiting}, "csrf": {tok}}.Encode(), nil); code != http.StatusForbidden {
		t.Errorf("planted cookie with another browser's token: %d, want 403", code)
	}
	if q, _ := f.in.Queue(ctx, f.Waiting); q.Paused {
		t.Fatal("a cross-origin POST paused the queue")
	}

	// The same-origin flow still works: as browsers send it, and as a
	// script without the Fetch Metadata headers does.
	if code := postWith(hc, pause, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": srv.URL}); code != http.StatusSeeOther {
		t.Fatalf("same-origin POST: %d, want 303", code)
	}
	if q, _ := f.in.Queue(ctx, f.Waiting); !q.Paused {
		t.Fatal("the same-origin POST did not pause the queue")
	}
	if code := postWith(hc, url.Values{"queue": {f.Waiting}, "csrf": {tok}}.Encode(), nil); code != http.StatusSeeOther {
		t.Fatalf("POST without Fetch Metadata: %d, want 303", code)
	}
}
