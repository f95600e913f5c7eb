package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/httpapi"
)

// The HTTP API (package internal/httpapi) in the run mode: the role api,
// and `worker api`, which is the run mode with that role alone. Its tokens
// come from the environment only (API_TOKENS, API_TOKENS_FILE): a secret in
// a flag would show in ps and in the shell's history.

// roles is the set of parts a process runs (-role).
type roles struct {
	worker, coordinator, api bool
}

// parseRoles reads -role: a comma-separated set of worker, coordinator and
// api, where both stands for worker,coordinator.
func parseRoles(s string) (roles, error) {
	var r roles
	none := true
	for _, part := range strings.Split(s, ",") {
		switch strings.TrimSpace(part) {
		case "":
			continue
		case "worker":
			r.worker = true
		case "coordinator":
			r.coordinator = true
		case "both":
			r.worker, r.coordinator = true, true
		case "api":
			r.api = true
		default:
			return roles{}, fmt.Errorf("-role %q: unknown role %q: want a comma-separated set of worker, coordinator and api (both is worker,coordinator)", s, strings.TrimSpace(part))
		}
		none = false
	}
	if none {
		return roles{}, fmt.Errorf("-role %q: no role: want a comma-separated set of worker, coordinator and api (both is worker,coordinator)", s)
	}
	return r, nil
}

// String lists the roles as -role takes them: "worker,coordinator,api".
func (r roles) String() string {
	var out []string
	if r.worker {
		out = append(out, "worker")
	}
	if r.coordinator {
		out = append(out, "coordinator")
	}
	if r.api {
		out = append(out, "api")
	}
	return strings.Join(out, ",")
}

// apiTokens reads the API's tokens: API_TOKENS (entries in the form of
// httpapi.ParseTokens) and the file file (API_TOKENS_FILE: the same form,
// as a mounted secret holds it). A source that is set must hold a token, and
// a name may be used once. Errors name an entry by its position and name,
// never its secret.
func apiTokens(getenv func(string) string, file string) ([]httpapi.Token, error) {
	var tokens []httpapi.Token
	if s := getenv("API_TOKENS"); s != "" {
		ts, err := httpapi.ParseTokens(s)
		if err != nil {
			return nil, fmt.Errorf("API_TOKENS: %w", err)
		}
		if len(ts) == 0 {
			return nil, errors.New("API_TOKENS is set but holds no token")
		}
		tokens = append(tokens, ts...)
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			// The error of the file system names the path, not the content.
			return nil, fmt.Errorf("API_TOKENS_FILE: %w", err)
		}
		ts, err := httpapi.ParseTokens(string(b))
		if err != nil {
			return nil, fmt.Errorf("API_TOKENS_FILE %s: %w", file, err)
		}
		if len(ts) == 0 {
			return nil, fmt.Errorf("API_TOKENS_FILE %s holds no token", file)
		}
		tokens = append(tokens, ts...)
	}
	// Each source is checked by ParseTokens; the two together here.
	names, secrets := map[string]bool{}, map[string]string{}
	for _, t := range tokens {
		if names[t.Name] {
			return nil, fmt.Errorf("API token %s is in API_TOKENS and in API_TOKENS_FILE: names must be unique", t.Name)
		}
		if other, dup := secrets[t.Secret]; dup {
			return nil, fmt.Errorf("API tokens %s and %s have the same secret: each token needs its own", other, t.Name)
		}
		names[t.Name], secrets[t.Secret] = true, t.Name
	}
	return tokens, nil
}

// tokenNames lists the tokens' names, for the log.
func tokenNames(tokens []httpapi.Token) []string {
	names := make([]string, len(tokens))
	for i, t := range tokens {
		names[i] = t.Name
	}
	return names
}

// loadTLS reads -tls-cert and -tls-key: both or neither, and a pair that
// loads. It returns nil for neither.
func loadTLS(certFile, keyFile, httpAddr string) (*tls.Config, error) {
	switch {
	case certFile == "" && keyFile == "":
		return nil, nil
	case certFile == "" || keyFile == "":
		return nil, errors.New("-tls-cert and -tls-key (TLS_CERT_FILE, TLS_KEY_FILE) go together: set both or neither")
	case httpAddr == "":
		return nil, errors.New("-tls-cert and -tls-key serve -http (HTTP_ADDR) over TLS: set it too")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		// crypto/tls names what is wrong with the PEM, never the key.
		return nil, fmt.Errorf("-tls-cert %s and -tls-key %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// apiHandler returns the API's handler on rdb, and what closes its client.
// Its reads (GET, the outcome waits among them) end when drain is done, so
// that a draining process answers them at once rather than holding its
// shutdown for their wait.
func apiHandler(ctx context.Context, cfg *config, rdb redis.UniversalClient, log *slog.Logger, drain context.Context) (http.Handler, func(), error) {
	c, err := client.New(ctx, rdb, &client.Config{Logger: log})
	if err != nil {
		return nil, nil, err
	}
	h, err := httpapi.New(httpapi.Config{Client: c, Inspector: inspect.New(rdb), Logger: log, Tokens: cfg.tokens})
	if err != nil {
		_ = c.Close()
		return nil, nil, err
	}
	return endReadsOnDrain(h, drain), func() { _ = c.Close() }, nil
}

// endReadsOnDrain cancels the context of h's GET and HEAD requests when
// drain is done. Writes (POST) keep theirs: an enqueue cut halfway would
// leave its caller unsure whether the task was added. A read that ends so
// without an answer (the API writes none to a caller whose context ended)
// gets a 503 with Retry-After: asked again, another process answers.
func endReadsOnDrain(h http.Handler, drain context.Context) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(drain, cancel)
		defer stop()
		rw := &answered{ResponseWriter: w}
		h.ServeHTTP(rw, r.WithContext(ctx))
		if !rw.done && drain.Err() != nil && r.Context().Err() == nil {
			hd := w.Header()
			hd.Set("Content-Type", "application/json")
			hd.Set("Retry-After", "1")
			hd.Set("Connection", "close")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":"this server is shutting down: ask again"}`+"\n")
		}
	})
}

// answered is a ResponseWriter that notes whether a response was begun.
type answered struct {
	http.ResponseWriter
	done bool
}

func (a *answered) WriteHeader(code int) {
	a.done = true
	a.ResponseWriter.WriteHeader(code)
}

func (a *answered) Write(b []byte) (int, error) {
	a.done = true
	return a.ResponseWriter.Write(b)
}

// Unwrap gives http.ResponseController the writer underneath.
func (a *answered) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// apiUsage is the part of -h on the API's environment.
const apiUsage = `the HTTP API (role api, worker api) at /v1/ on -http; GET /v1/openapi.json describes it:
  API_TOKENS       bearer tokens, "NAME:SECRET" or "NAME:SECRET:QUEUE,QUEUE" (limited to those
                   queues), separated by ";" or newlines; from the environment only, never a flag;
                   a SECRET is at least 16 bytes, without ':'
  API_TOKENS_FILE  a file of such entries (a mounted secret), with API_TOKENS or instead
  with no token the API serves every request unauthenticated, and only on a loopback -http
  address (127.0.0.1:PORT); it refuses to start on any other
`
