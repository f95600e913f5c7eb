package dashboard

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
)

// Limits of what a list shows of one value; the task page shows it whole.
const (
	shortLen = 160     // runes of an id, kind or error in a list
	argsLen  = 300     // runes of args in a list
	pageLen  = 100_000 // bytes of args or result on the task page before "show all"
)

// pageDef is one page: its template and the parts of it that its JSON
// twin renders again for live updates.
type pageDef struct {
	name    string
	regions []string
}

var pages = []pageDef{
	{"overview", []string{"queues", "latency"}},
	{"queue", []string{"counts", "tasks"}},
	{"task", []string{"task"}},
	{"groups", []string{"groups"}},
	{"group", []string{"group"}},
	{"repeats", []string{"repeats"}},
	{"workers", []string{"workers"}},
	{"throttles", []string{"throttles"}},
}

// templates holds one template set per page (layout and page).
type templates struct {
	set  map[string]*template.Template
	defs map[string]pageDef
}

func parseTemplates() (*templates, error) {
	t := &templates{set: map[string]*template.Template{}, defs: map[string]pageDef{}}
	for _, p := range pages {
		tp, err := template.New(p.name).Funcs(funcs).ParseFS(assets, "assets/templates/layout.html", "assets/templates/"+p.name+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard: templates of %s: %w", p.name, err)
		}
		t.set[p.name], t.defs[p.name] = tp, p
	}
	return t, nil
}

// view is what every template gets.
type view struct {
	Base     string
	Title    string
	Page     string // its pageDef name: the active item of the menu
	Live     string // its JSON twin's URL, polled by app.js
	CSRF     string
	ReadOnly bool
	Target   string
	Flash    string
	FlashErr bool
	Now      time.Time
	Self     string // the request's path and query, for the actions' way back
	Data     any
}

// result is what a page's handler returns.
type result struct {
	name   string // pageDef name
	title  string
	data   any
	status int // 0: 200
}

// pageFunc reads what one page shows.
type pageFunc func(w http.ResponseWriter, r *http.Request) (result, error)

// page serves a page's HTML.
func (s *server) page(f pageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := s.newView(w, r, true)
		res, err := f(w, r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if res.name == "" {
			return // answered (a redirect)
		}
		v.Title, v.Page, v.Data = res.title, res.name, res.data
		if r.URL.Path == "/" {
			v.Live = s.base + "/api/overview"
		} else {
			v.Live = s.base + "/api" + r.URL.Path
		}
		if r.URL.RawQuery != "" {
			v.Live += "?" + r.URL.RawQuery
		}
		var b bytes.Buffer
		if err := s.tpl.set[res.name].ExecuteTemplate(&b, "layout", v); err != nil {
			s.fail(w, r, err)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		if res.status != 0 {
			w.WriteHeader(res.status)
		}
		_, _ = w.Write(b.Bytes())
	}
}

// liveJSON is a JSON twin's answer: the page's data, and its live parts
// rendered as HTML.
type liveJSON struct {
	Data    any               `json:"data"`
	Regions map[string]string `json:"regions"`
}

// api serves a page's JSON twin.
func (s *server) api(f pageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := s.newView(w, r, false)
		res, err := f(w, r)
		if err != nil {
			s.failJSON(w, err)
			return
		}
		if res.name == "" {
			return
		}
		v.Title, v.Page, v.Data = res.title, res.name, res.data
		out := liveJSON{Data: res.data, Regions: map[string]string{}}
		for _, reg := range s.tpl.defs[res.name].regions {
			var b bytes.Buffer
			if err := s.tpl.set[res.name].ExecuteTemplate(&b, res.name+"."+reg, v); err != nil {
				s.failJSON(w, err)
				return
			}
			out.Regions[reg] = b.String()
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		if res.status != 0 {
			w.WriteHeader(res.status)
		}
		_ = json.NewEncoder(w).Encode(out)
	}
}

// newView is what every template of the request gets. A page (flash set)
// takes the flash message, once; a JSON twin leaves it for the page.
func (s *server) newView(w http.ResponseWriter, r *http.Request, flash bool) *view {
	// The page's own address, for the actions' way back (its JSON twin
	// renders the same forms).
	self := r.URL.Path
	if rest, ok := strings.CutPrefix(self, "/api/"); ok {
		self = "/" + rest
		if self == "/overview" {
			self = "/"
		}
	}
	if r.URL.RawQuery != "" {
		self += "?" + r.URL.RawQuery
	}
	v := &view{Base: s.base, ReadOnly: s.opts.ReadOnly, Target: s.opts.Target, Now: s.now(), CSRF: s.csrfToken(w, r),
		Self: s.base + self}
	if c, err := r.Cookie(flashCookie); err == nil && flash {
		if msg, err := base64.RawURLEncoding.DecodeString(c.Value); err == nil {
			m := string(msg)
			v.FlashErr = strings.HasPrefix(m, "!")
			v.Flash = strings.TrimPrefix(m, "!")
		}
		http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: "", Path: s.cookiePath(), MaxAge: -1, HttpOnly: true,
			SameSite: http.SameSiteStrictMode})
	}
	return v
}

// fail answers a page that could not be read.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	err = s.scrub(err)
	s.log.Warn("dashboard page", slog.String("path", r.URL.Path), slog.String("err", err.Error()))
	status := statusOf(err)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = s.tpl.set["overview"].ExecuteTemplate(w, "error", struct {
		Base, Err string
		Status    int
	}{s.base, valid(err.Error()), status})
}

func (s *server) failJSON(w http.ResponseWriter, err error) {
	err = s.scrub(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(statusOf(err))
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// badRequest marks an error as the request's fault (400).
type badRequest struct{ error }

func (b badRequest) Unwrap() error { return b.error }

func statusOf(err error) int {
	var b badRequest
	if errors.As(err, &b) {
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// valid replaces invalid UTF-8 with U+FFFD.
func valid(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// short is s made valid, on one line, cut to n runes with an ellipsis.
func short(n int, s string) string {
	s = valid(s)
	if len(s) > n*4 {
		s = s[:n*4]
		s = strings.ToValidUTF8(s, "")
	}
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) > n {
		r := []rune(s)
		return string(r[:n-1]) + "…"
	}
	return s
}

// pretty indents JSON; cut is set when it was longer than limit bytes (0:
// no limit) and cut there.
func pretty(raw json.RawMessage, limit int) (out string, cut bool) {
	if len(raw) == 0 {
		return "", false
	}
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		b.Reset()
		b.Write(raw)
	}
	s := valid(unescapeHTML(b.String()))
	if limit > 0 && len(s) > limit {
		return strings.ToValidUTF8(s[:limit], "") + "\n…", true
	}
	return s, false
}

// unescapeHTML undoes encoding/json's escapes of <, > and & (\u003c,
// \u003e, \u0026) in JSON text, so that they show as themselves (the
// template escapes them for HTML). Other escapes are left as they are.
func unescapeHTML(s string) string {
	if !strings.Contains(s, `\u00`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		if s[i+1] == 'u' && i+6 <= len(s) {
			switch s[i+2 : i+6] {
			case "003c":
				b.WriteByte('<')
				i += 5
				continue
			case "003e":
				b.WriteByte('>')
				i += 5
				continue
			case "0026":
				b.WriteByte('&')
				i += 5
				continue
			}
		}
		b.WriteString(s[i : i+2]) // an escape pair, kept
		i++
	}
	return b.String()
}

var funcs = template.FuncMap{
	"short": func(s string) string { return short(shortLen, s) },
	"valid": valid,
	"args": func(raw json.RawMessage) string {
		if len(raw) > argsLen*8 {
			raw = raw[:argsLen*8]
		}
		return short(argsLen, unescapeHTML(string(raw)))
	},
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"iso": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339Nano)
	},
	"rel": rel,
	"pct": func(part, whole int64) int {
		if whole <= 0 {
			return 0
		}
		return int(part * 100 / whole)
	},
	"add":   func(a, b int64) int64 { return a + b },
	"int64": func(n int) int64 { return int64(n) },
	"num":   func(n int64) string { return group3(n) },
	"dur": func(d time.Duration) string {
		if d <= 0 {
			return "0"
		}
		return d.Round(time.Millisecond).String()
	},
	"secs": func(f float64) string {
		d := time.Duration(f * float64(time.Second))
		switch {
		case d < time.Millisecond:
			return strconv.FormatFloat(f*1e6, 'f', 0, 64) + " µs"
		case d < time.Second:
			return strconv.FormatFloat(f*1e3, 'f', 1, 64) + " ms"
		}
		return strconv.FormatFloat(f, 'f', 2, 64) + " s"
	},
	"states":  func() []inspect.State { return listStates },
	"countOf": countOf,
	"shardCount": func(q inspect.QueueInfo) int { // a sharded queue's shards, its plain queue not counted
		n := 0
		for _, s := range q.Shards {
			if s.Index >= 0 {
				n++
			}
		}
		return n
	},
	"isGroup": keys.IsGroupID,
	"bytes":   HumanBytes,
	"work":    func(done, total int64) inspect.Progress { return inspect.Progress{Done: done, Total: total} },
}

// HumanBytes prints n bytes in binary units, one decimal where it says
// something: "512 B", "12.3 MiB", "200 MiB". Progress is shown as bytes,
// the unit of the shipped upload handler. The CLI prints them the same way.
func HumanBytes(n int64) string {
	if n < 1024 && n > -1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	f := float64(n)
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	u := -1
	for (f >= 1024 || f <= -1024) && u < len(units)-1 {
		f /= 1024
		u++
	}
	return strings.TrimSuffix(strconv.FormatFloat(f, 'f', 1, 64), ".0") + " " + units[u]
}

// rel says how far t is from now: "12s ago", "in 3m".
func rel(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	suffix := ""
	prefix := "in "
	if d < 0 {
		d, prefix, suffix = -d, "", " ago"
	}
	var s string
	switch {
	case d < time.Second:
		return "now"
	case d < time.Minute:
		s = strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		s = strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		s = strconv.Itoa(int(d/time.Hour)) + "h"
	default:
		s = strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	return prefix + s + suffix
}

// group3 writes n with thin separators: 1 000 000.
func group3(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteString("\u202f")
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

var listStates = []inspect.State{inspect.StateWaiting, inspect.StateRunning, inspect.StateScheduled,
	inspect.StateRetrying, inspect.StateHeld, inspect.StateDead}

// countOf is a queue's count of tasks in state.
func countOf(q inspect.QueueInfo, st inspect.State) int64 {
	switch st {
	case inspect.StateWaiting:
		return q.Waiting
	case inspect.StateRunning:
		return q.Running
	case inspect.StateScheduled:
		return q.Scheduled
	case inspect.StateRetrying:
		return q.Retrying
	case inspect.StateHeld:
		return q.Held
	case inspect.StateDead:
		return q.Dead
	}
	return 0
}

// chart is the SVG of one queue's last hour: processed and failed per
// minute as two polylines in a 600×120 box.
type chart struct {
	Processed, Failed  string // polyline points
	Max                int64
	Total, FailedTotal int64
	From, To           time.Time
}

const chartW, chartH = 600, 120

func makeChart(ms []inspect.MinuteStat) chart {
	c := chart{}
	for _, m := range ms {
		c.Max = max(c.Max, m.Processed, m.Failed)
		c.Total += m.Processed
		c.FailedTotal += m.Failed
	}
	if len(ms) > 0 {
		c.From, c.To = ms[0].Minute, ms[len(ms)-1].Minute
	}
	top := max(c.Max, 1)
	var p, f strings.Builder
	for j, m := range ms {
		x := 0.0
		if len(ms) > 1 {
			x = float64(j) * chartW / float64(len(ms)-1)
		}
		yp := chartH - float64(m.Processed)*(chartH-4)/float64(top) - 2
		yf := chartH - float64(m.Failed)*(chartH-4)/float64(top) - 2
		fmt.Fprintf(&p, "%.1f,%.1f ", x, yp)
		fmt.Fprintf(&f, "%.1f,%.1f ", x, yf)
	}
	c.Processed, c.Failed = strings.TrimSpace(p.String()), strings.TrimSpace(f.String())
	return c
}
