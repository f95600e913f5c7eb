package dashboard

import (
	"net/http"
	"net/url"
	"testing"
)

// backTo keeps a path of the dashboard and turns anything else, the values
// a browser would read as another site among them, into the overview.
func TestBackToHostile(t *testing.T) {
	t.Parallel()
	for _, base := range []string{"", "/ui"} {
		s := &server{base: base}
		root := base + "/"
		for _, b := range []string{
			root + "queues/q?state=dead",
			root + "task?id=q%3Aabc",
			root + "groups?cursor=12",
			root,
		} {
			if got := s.backTo(b); got != b {
				t.Errorf("base %q: backTo(%q) = %q, want it kept", base, b, got)
			}
		}
		for _, b := range []string{
			"",
			"https://evil.example/",
			"http:" + root + "x",
			"//evil.example/",
			"/\\evil.example",
			"/\t/evil.example",
			"/\t\t/evil.example",
			root + "\t/evil.example",
			"/\n/evil.example",
			"/\r/evil.example",
			"/\x00/evil.example",
			"/\x1f/evil.example",
			"/\x7f/evil.example",
			root + "x\\y",
			"\t//evil.example",
			" //evil.example",
			"javascript:alert(1)",
			"//user@evil.example" + root,
			"http://user@" + "127.0.0.1" + root,
			"relative/path",
			"?q=1",
			"/other-mount/",
		} {
			if base == "" && b == "/other-mount/" {
				continue // a path of the dashboard when it is mounted at the root
			}
			if got := s.backTo(b); got != root {
				t.Errorf("base %q: backTo(%q) = %q, want %q", base, b, got, root)
			}
		}
	}
}

// Through an action: the tab that a browser drops from a Location does not
// make it another site's address.
func TestBackToTabAction(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv, hc := f.server(t, Options{})
	tok := csrfOf(t, hc, srv.URL+"/queues/"+f.Dead+"?state=dead")
	resp := post(t, hc, srv.URL+"/actions/resume", url.Values{"csrf": {tok}, "queue": {f.Dead}, "back": {"/\t/evil.example"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("back with a tab: %d to %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
}
