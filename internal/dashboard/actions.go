package dashboard

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
)

// actionTimeout bounds one action (retry-all and purge-all go through every
// dead task of a queue).
const actionTimeout = 2 * time.Minute

// action runs one POSTed action and redirects back with a flash message.
// Form fields: csrf (required), back (the page to return to), and per
// action: id (cancel, retry, purge), queue (pause, resume, retry-all,
// purge-all, delete-queue), kind (retry-all, purge-all: only that kind),
// confirm (delete-queue: the queue's name typed again) and force
// (delete-queue: "1" deletes a queue that holds tasks).
func (s *server) action(w http.ResponseWriter, r *http.Request) {
	if s.opts.ReadOnly {
		http.Error(w, "forbidden: the dashboard is read-only", http.StatusForbidden)
		return
	}
	// A browser tells a POST from a page of another origin (Sec-Fetch-Site,
	// or else Origin): refused before anything else, whatever it carries.
	if err := s.cop.Check(r); err != nil {
		http.Error(w, "forbidden: a cross-origin request", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	if !s.checkCSRF(r) {
		http.Error(w, "forbidden: missing or wrong CSRF token (reload the page)", http.StatusForbidden)
		return
	}
	name := r.PathValue("action")
	msg, err := s.run(r.Context(), name, r)
	if errors.Is(err, errUnknownAction) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	flash := msg
	if err != nil {
		err = s.scrub(err)
		s.log.Warn("dashboard action", slog.String("action", name), slog.String("err", err.Error()))
		flash = "!" + name + ": " + err.Error()
	} else {
		s.log.Info("dashboard action", slog.String("action", name), slog.String("queue", r.PostFormValue("queue")),
			slog.String("id", r.PostFormValue("id")), slog.String("result", msg))
	}
	if len(flash) > 1000 {
		flash = flash[:1000] + "…"
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: base64.RawURLEncoding.EncodeToString([]byte(flash)),
		Path: s.cookiePath(), HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: 60, Secure: r.TLS != nil})
	back := r.PostFormValue("back")
	if name == "delete-queue" && err == nil {
		back = ""
	}
	http.Redirect(w, r, s.backTo(back), http.StatusSeeOther)
}

var errUnknownAction = errors.New("unknown action")

// backTo returns back when it is a path of this dashboard, else its
// overview: the way back cannot lead off the site. A path only: no scheme,
// host or user; under the base path; no control byte (a browser drops a
// tab or a newline from a Location, so "/\t/evil.example" would be read as
// //evil.example); no backslash (read as a slash); not starting with "//".
func (s *server) backTo(back string) string {
	root := s.base + "/"
	if !strings.HasPrefix(back, root) || strings.HasPrefix(back, "//") || strings.ContainsRune(back, '\\') {
		return root
	}
	for i := 0; i < len(back); i++ {
		if back[i] < 0x20 || back[i] == 0x7f {
			return root
		}
	}
	u, err := url.Parse(back)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || !strings.HasPrefix(u.Path, root) {
		return root
	}
	return back
}

func (s *server) run(ctx context.Context, name string, r *http.Request) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, actionTimeout)
	defer cancel()
	id, queue, kind := r.PostFormValue("id"), r.PostFormValue("queue"), r.PostFormValue("kind")
	checkID := func() error {
		_, _, err := keys.SplitTaskID(id)
		return err
	}
	// A sharded queue's name acts on all its shards, a shard's on itself.
	checkQueue := func() error { return keys.ValidatePhysicalQueue(queue) }
	switch name {
	case "cancel":
		if err := checkID(); err != nil {
			return "", err
		}
		st, err := s.in.CancelTask(ctx, id)
		if err != nil {
			return "", err
		}
		switch st {
		case inspect.StateCancelled:
			return "cancelled " + id, nil
		case inspect.StateRunning:
			return "asked the worker running " + id + " to cancel it", nil
		}
		return fmt.Sprintf("%s had ended already (%s)", id, st), nil
	case "retry":
		if err := checkID(); err != nil {
			return "", err
		}
		if err := s.in.RetryDeadTask(ctx, id); err != nil {
			return "", err
		}
		return "retried " + id, nil
	case "purge":
		if err := checkID(); err != nil {
			return "", err
		}
		if err := s.in.PurgeDeadTask(ctx, id); err != nil {
			return "", err
		}
		return "deleted dead task " + id, nil
	case "pause", "resume":
		if err := checkQueue(); err != nil {
			return "", err
		}
		if name == "pause" {
			return "paused " + queue + ": workers stop taking its tasks within a second", s.in.Pause(ctx, queue)
		}
		return "resumed " + queue, s.in.Resume(ctx, queue)
	case "retry-all", "purge-all":
		if err := checkQueue(); err != nil {
			return "", err
		}
		of := ""
		if kind != "" {
			of = " of kind " + kind
		}
		if name == "retry-all" {
			n, err := s.in.RetryDead(ctx, queue, kind)
			return fmt.Sprintf("retried %d dead task(s)%s of %s", n, of, queue), err
		}
		n, err := s.in.PurgeDead(ctx, queue, kind)
		return fmt.Sprintf("deleted %d dead task(s)%s of %s", n, of, queue), err
	case "delete-queue":
		if err := checkQueue(); err != nil {
			return "", err
		}
		if r.PostFormValue("confirm") != queue {
			return "", fmt.Errorf("type the queue's name, %s, to confirm", queue)
		}
		if err := s.in.DeleteQueue(ctx, queue, r.PostFormValue("force") == "1"); err != nil {
			return "", err
		}
		return "deleted queue " + queue, nil
	}
	return "", fmt.Errorf("%w %q", errUnknownAction, name)
}
