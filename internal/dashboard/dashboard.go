package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/loopback"
)

//go:embed assets
var assets embed.FS

// Options configures New.
type Options struct {
	// Addr is the address the handler is served on (host:port). Without
	// Token and without User and Password, New refuses any but a loopback
	// one (127.0.0.0/8, ::1, localhost): an empty host (":8080") listens
	// on every interface and is refused too.
	Addr string
	// ReadOnly renders no action and refuses every POST with 403.
	ReadOnly bool
	// BasePath is the path the handler is mounted at: "/ui", or "" or "/"
	// for the root. The handler strips it itself: mount it with
	// mux.Handle(BasePath+"/", h).
	BasePath string
	// Token, when set, admits a request carrying it as a bearer token
	// (Authorization: Bearer <token>), or as ?token=<token> (once: the
	// answer sets an HttpOnly cookie and redirects to the same page
	// without it).
	Token string
	// User and Password, when both set, admit a request with basic auth.
	// With Token too, either admits.
	User, Password string
	// Target describes the Redis the inspector reads, for the page header:
	// never with a password (cmd/worker gives its redacted form).
	Target string
	// Scrub, when set, is applied to every error before it is shown or
	// logged (cmd/worker's takes the Redis passwords out).
	Scrub func(error) error
	// Metrics, when set, is where the latency percentiles of the overview
	// come from: the async_task_duration_seconds and
	// async_task_queued_seconds histograms of package metrics, gathered
	// from this process (so only when the dashboard runs in a worker that
	// exports them).
	Metrics prometheus.Gatherer
	// Logger receives the errors of requests; nil discards them.
	Logger *slog.Logger
	// Now is the clock of the pages' relative times ("3 s ago"); nil
	// means time.Now.
	Now func() time.Time
}

// ErrNoAuth is returned by New for a non-loopback address without
// authentication.
var ErrNoAuth = errors.New("dashboard: no DASHBOARD_TOKEN and no DASHBOARD_USER/DASHBOARD_PASSWORD: it serves only a loopback address")

// server is the handler New returns.
type server struct {
	in   *inspect.Inspector
	opts Options
	base string // "" or "/ui"
	log  *slog.Logger
	mux  *http.ServeMux
	tpl  *templates
	// tokenSum is the sha256 of Options.Token: the auth cookie holds it,
	// not the token.
	tokenSum string
	// csrfKey is the per-process random key of the CSRF tokens: a form's
	// token is the HMAC of its browser's CSRF cookie under it.
	csrfKey []byte
	// cop refuses the POSTs a browser marks as cross-origin (Sec-Fetch-Site,
	// Origin).
	cop *http.CrossOriginProtection
	now func() time.Time
}

// New returns the dashboard on in. It fails for a BasePath that is not
// "", "/" or "/<path>" without a trailing slash, for a User without a
// Password or the other way round, and (ErrNoAuth) for an Addr that is not
// loopback when no authentication is configured.
func New(in *inspect.Inspector, opts Options) (http.Handler, error) {
	if in == nil {
		return nil, errors.New("dashboard: nil inspector")
	}
	base := strings.TrimSuffix(opts.BasePath, "/")
	if base != "" && (!strings.HasPrefix(base, "/") || strings.ContainsAny(base, "?#\"'<> ")) {
		return nil, fmt.Errorf("dashboard: BasePath %q: want \"/\" or a path such as /ui", opts.BasePath)
	}
	if (opts.User == "") != (opts.Password == "") {
		return nil, errors.New("dashboard: DASHBOARD_USER and DASHBOARD_PASSWORD go together")
	}
	if err := CheckAddr(opts.Addr, opts.Token != "" || opts.User != ""); err != nil {
		return nil, err
	}
	s := &server{in: in, opts: opts, base: base, log: opts.Logger, now: opts.Now,
		csrfKey: make([]byte, 32), cop: http.NewCrossOriginProtection()}
	_, _ = rand.Read(s.csrfKey)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if opts.Token != "" {
		sum := sha256.Sum256([]byte(opts.Token))
		s.tokenSum = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	var err error
	if s.tpl, err = parseTemplates(); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

// CheckAddr returns ErrNoAuth when addr is not a loopback address and
// authenticated is false.
func CheckAddr(addr string, authenticated bool) error {
	if authenticated {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w; the address %q is not host:port", ErrNoAuth, addr)
	}
	if loopback.Host(host) {
		return nil
	}
	return fmt.Errorf("%w, and %q is not one (use 127.0.0.1:PORT, or set a token or a user and password)", ErrNoAuth, addr)
}

func (s *server) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets/static")
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServer(http.FS(static))))
	m.HandleFunc("GET /{$}", s.page(s.overview))
	m.HandleFunc("GET /api/overview", s.api(s.overview))
	m.HandleFunc("GET /queues/{queue}", s.page(s.queue))
	m.HandleFunc("GET /api/queues/{queue}", s.api(s.queue))
	m.HandleFunc("GET /task", s.page(s.task))
	m.HandleFunc("GET /api/task", s.api(s.task))
	m.HandleFunc("GET /groups", s.page(s.groups))
	m.HandleFunc("GET /api/groups", s.api(s.groups))
	m.HandleFunc("GET /group", s.page(s.group))
	m.HandleFunc("GET /api/group", s.api(s.group))
	m.HandleFunc("GET /repeats", s.page(s.repeats))
	m.HandleFunc("GET /api/repeats", s.api(s.repeats))
	m.HandleFunc("GET /workers", s.page(s.workers))
	m.HandleFunc("GET /api/workers", s.api(s.workers))
	m.HandleFunc("GET /throttles", s.page(s.throttles))
	m.HandleFunc("GET /api/throttles", s.api(s.throttles))
	m.HandleFunc("POST /actions/{action}", s.action)
	s.mux = m
}

// ServeHTTP sets the security headers, authenticates, strips the base path
// and routes.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if !s.authenticate(w, r) {
		return
	}
	p := r.URL.Path
	if s.base != "" {
		if p == s.base {
			http.Redirect(w, r, s.base+"/", http.StatusFound)
			return
		}
		if !strings.HasPrefix(p, s.base+"/") {
			http.NotFound(w, r)
			return
		}
		p = p[len(s.base):]
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath = p, ""
	s.mux.ServeHTTP(w, r2)
}

const (
	authCookie  = "async_dash_auth"
	csrfCookie  = "async_dash_csrf"
	flashCookie = "async_dash_flash"
)

// authenticate admits the request, or answers it with 401 and returns
// false.
func (s *server) authenticate(w http.ResponseWriter, r *http.Request) bool {
	if s.opts.Token == "" && s.opts.User == "" {
		// Loopback only: New checked the address. The Host must name a
		// loopback host too, or a page of another site whose name was
		// made to resolve to 127.0.0.1 (DNS rebinding) could read these
		// pages and post their forms as its own.
		if !loopback.Host(r.Host) {
			http.Error(w, "forbidden: without authentication the dashboard answers only requests to localhost or a loopback address", http.StatusForbidden)
			return false
		}
		return true
	}
	if s.opts.Token != "" {
		if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") && equal(a[len("Bearer "):], s.opts.Token) {
			return true
		}
		if c, err := r.Cookie(authCookie); err == nil && equal(c.Value, s.tokenSum) {
			return true
		}
		if t := r.URL.Query().Get("token"); t != "" && r.Method == http.MethodGet && equal(t, s.opts.Token) {
			http.SetCookie(w, &http.Cookie{Name: authCookie, Value: s.tokenSum, Path: s.cookiePath(), HttpOnly: true,
				SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			u := *r.URL
			q := u.Query()
			q.Del("token")
			u.RawQuery = q.Encode()
			http.Redirect(w, r, u.RequestURI(), http.StatusFound)
			return false
		}
	}
	if s.opts.User != "" {
		if u, p, ok := r.BasicAuth(); ok && equal(u, s.opts.User) && equal(p, s.opts.Password) {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="async dashboard", charset="UTF-8"`)
	}
	http.Error(w, "unauthorized: this dashboard needs its token or its user and password", http.StatusUnauthorized)
	return false
}

// equal compares two secrets in constant time (for equal lengths; the
// lengths are compared through their hashes, so neither leaks).
func equal(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

func (s *server) cookiePath() string {
	if s.base == "" {
		return "/"
	}
	return s.base + "/"
}

// csrfToken returns the CSRF token of the browser's forms, setting a new
// CSRF cookie when it has none. The token is not the cookie's value but
// its HMAC under a key of this process: a page of another site on the same
// host (cookies are not kept apart by port) may plant a cookie of its own,
// but cannot compute the token that goes with it.
func (s *server) csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 43 {
		return s.csrfMAC(c.Value)
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	t := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: t, Path: s.cookiePath(), HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	return s.csrfMAC(t)
}

// csrfMAC returns the token that goes with the CSRF cookie value v.
func (s *server) csrfMAC(v string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte(v))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF reports whether the POST r carries, in its form field csrf or
// its header X-CSRF-Token, the token of a CSRF cookie it carries (a
// browser may send two of that name: its own and one planted with a
// deeper Path; either may match).
func (s *server) checkCSRF(r *http.Request) bool {
	got := r.Header.Get("X-CSRF-Token")
	if got == "" {
		got = r.PostFormValue("csrf")
	}
	if got == "" {
		return false
	}
	ok := false
	for _, c := range r.CookiesNamed(csrfCookie) {
		if c.Value != "" && hmac.Equal([]byte(got), []byte(s.csrfMAC(c.Value))) {
			ok = true
		}
	}
	return ok
}

// scrub applies Options.Scrub.
func (s *server) scrub(err error) error {
	if err != nil && s.opts.Scrub != nil {
		return s.opts.Scrub(err)
	}
	return err
}
