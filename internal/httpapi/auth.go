package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/taskfleet/async/internal/keys"
)

// token is a Token as the server checks it: the SHA-256 of its secret
// (compared in constant time; the secret itself is not kept), and its
// queues, nil for all.
type token struct {
	name   string
	sum    [sha256.Size]byte
	queues map[string]bool
}

func newTokens(ts []Token) ([]token, error) {
	out := make([]token, 0, len(ts))
	seen := map[[sha256.Size]byte]string{}
	for i, t := range ts {
		if t.Name == "" || t.Secret == "" {
			return nil, fmt.Errorf("httpapi: Config.Tokens[%d] (%q) has no name or no secret", i, t.Name)
		}
		k := token{name: t.Name, sum: sha256.Sum256([]byte(t.Secret))}
		if other, dup := seen[k.sum]; dup {
			return nil, fmt.Errorf("httpapi: Config.Tokens[%d] (%q) has the secret of token %q", i, t.Name, other)
		}
		seen[k.sum] = t.Name
		if len(t.Queues) > 0 {
			k.queues = make(map[string]bool, len(t.Queues))
			for _, q := range t.Queues {
				if err := keys.ValidateName("queue", q); err != nil {
					return nil, fmt.Errorf("httpapi: Config.Tokens[%d] (%q): %w", i, t.Name, err)
				}
				k.queues[q] = true
			}
		}
		out = append(out, k)
	}
	return out, nil
}

// allows reports whether t may touch queue; a nil t (no tokens configured)
// may touch every queue. A shard's physical name (keys.ParseShard) is its
// sharded queue's: a token of "uploads" may touch "uploads~3.k2", where the
// ids of the tasks it enqueued to "uploads" point.
func (t *token) allows(queue string) bool {
	if t == nil || t.queues == nil {
		return true
	}
	if q, _, ok := keys.ParseShard(queue); ok {
		queue = q
	}
	return t.queues[queue]
}

var errNoBearer = errors.New("no bearer token")

// authenticate returns the token of r's "Authorization: Bearer <secret>",
// nil when the API has no tokens, or a 401.
func (s *server) authenticate(r *http.Request) (*token, *apiError) {
	if len(s.tokens) == 0 {
		return nil, nil
	}
	secret, err := bearer(r)
	if err != nil {
		return nil, &apiError{Status: http.StatusUnauthorized, Msg: "missing token: send the header \"Authorization: Bearer <token>\""}
	}
	sum := sha256.Sum256([]byte(secret))
	found := -1
	// Every token is compared, in constant time each, so that the time
	// taken tells nothing of which one (or which prefix) is near.
	for i := range s.tokens {
		if subtle.ConstantTimeCompare(sum[:], s.tokens[i].sum[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return nil, &apiError{Status: http.StatusUnauthorized, Msg: "invalid token"}
	}
	return &s.tokens[found], nil
}

// bearer returns the secret of r's Authorization header.
func bearer(r *http.Request) (string, error) {
	a := r.Header.Get("Authorization")
	const scheme = "bearer "
	if len(a) <= len(scheme) || !strings.EqualFold(a[:len(scheme)], scheme) {
		return "", errNoBearer
	}
	secret := strings.TrimSpace(a[len(scheme):])
	if secret == "" {
		return "", errNoBearer
	}
	return secret, nil
}

// allow returns a 403 naming the first of queues tok may not touch.
func (s *server) allow(tok *token, queues ...string) *apiError {
	for _, q := range queues {
		if !tok.allows(q) {
			return &apiError{Status: http.StatusForbidden, Msg: fmt.Sprintf("token %q may not use queue %s", tok.name, quote(q)), Field: "queue"}
		}
	}
	return nil
}

// authorize checks r's bearer token (401 when the API has tokens and r
// has none of them; writeError adds WWW-Authenticate: Bearer) and
// that it may touch every queue of queues (403 naming the first it may
// not). Without tokens every request passes.
func (s *server) authorize(r *http.Request, queues ...string) *apiError {
	tok, e := s.authenticate(r)
	if e != nil {
		return e
	}
	return s.allow(tok, queues...)
}
