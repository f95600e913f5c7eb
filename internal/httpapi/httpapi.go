package httpapi

import (
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/loopback"
)

// OpenAPI is the OpenAPI 3 document of the API, served at GET
// /v1/openapi.json. A test checks it against the handlers.
//
//go:embed openapi.json
var OpenAPI []byte

// Token is one bearer token the API accepts.
type Token struct {
	// Name identifies the token in logs (never the secret).
	Name string
	// Secret is what the caller sends: "Authorization: Bearer <Secret>".
	Secret string
	// Queues, when not empty, are the only queues the token may touch:
	// enqueue into, read and cancel tasks of, start groups with members
	// in, list. Empty means every queue.
	Queues []string
}

// Config configures the API handler.
type Config struct {
	// Client enqueues, reads and cancels tasks. Required.
	Client *client.Client
	// Inspector reads queues' counts and tasks' details. Required.
	Inspector *inspect.Inspector
	// Logger gets one line per refused request at debug level, and the
	// errors of Redis at warn. Defaults to slog.Default().
	Logger *slog.Logger
	// Tokens are the bearer tokens accepted. With none, every request is
	// served without authentication, and the caller must listen on a
	// loopback address only (see CheckAddr).
	Tokens []Token
	// MaxBodyBytes bounds the body of a request other than a batch or a
	// group.
	// Defaults to 4 MiB.
	MaxBodyBytes int64
	// MaxBatchBytes bounds the body of a batch (POST
	// /v1/queues/{queue}/tasks/batch) and of a group (POST /v1/groups).
	// Defaults to 64 MiB.
	MaxBatchBytes int64
	// MaxBatchTasks bounds the tasks of one batch, and the members of one
	// group. Defaults to 10000.
	MaxBatchTasks int
	// MaxWait bounds the wait of an outcome request (?wait=). Defaults to
	// 5 minutes.
	MaxWait time.Duration
	// BodyTimeout bounds the time a request's body takes to arrive, counted
	// from when the handler starts reading it (a read deadline on the
	// connection, through http.ResponseController): a body still arriving
	// then is refused with 408 and the connection closed. It does not bound
	// the answer (an outcome's wait). Defaults to 60 seconds. A
	// ResponseWriter that cannot set deadlines (a test's recorder) is read
	// without one.
	BodyTimeout time.Duration
	// Now is the caller's clock (durations such as "delay" and "deadline"
	// count from it). Defaults to time.Now.
	Now func() time.Time
	// MaxPayloadBytes is the Client's Config.MaxPayloadBytes: a task whose
	// args encode to more is refused with 413 before Redis is touched,
	// naming the task's "args". Defaults to the client's default, 1 MiB;
	// set it when the Client has another. (The Client checks its own limit
	// again.)
	MaxPayloadBytes int
}

// ErrNoToken is returned by CheckAddr for an address that is not loopback
// when no token is configured.
var ErrNoToken = errors.New("the API has no token configured, so it serves only a loopback address")

// CheckAddr returns an error when the API would serve addr ("host:port")
// without authentication on anything but a loopback address (127.0.0.0/8,
// ::1, localhost).
func CheckAddr(addr string, tokens bool) error {
	if tokens {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w; the address %q is not host:port", ErrNoToken, addr)
	}
	if loopback.Host(host) {
		return nil
	}
	return fmt.Errorf("%w, and %q is not one (use 127.0.0.1:PORT, or set API_TOKENS)", ErrNoToken, addr)
}

// MinSecretBytes is the shortest secret ParseTokens takes.
const MinSecretBytes = 16

// ParseTokens reads tokens from the environment's form (API_TOKENS):
// entries separated by ";" or newlines, each "NAME:SECRET" or
// "NAME:SECRET:QUEUE,QUEUE"; blank entries are skipped. The error names the
// bad entry by its position and name, never its secret.
//
// Names follow the name rule of queues ([A-Za-z0-9._-]{1,128}) and are
// unique; a secret is the text between the first and the second ':' (so it
// cannot contain ':'), white space around it trimmed, at least
// MinSecretBytes long, and used by one token only. The length rule also
// catches a secret with a ':' in it: "ops:abc:def" would otherwise be the
// secret "abc" limited to the queue "def". Use long random secrets (32
// bytes of a CSPRNG, hex or base64url): the API compares them in constant
// time but does not slow down guessing.
func ParseTokens(s string) ([]Token, error) {
	var out []Token
	names := map[string]int{}
	secrets := map[string]int{}
	pos := 0
	for entry := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == ';' || r == '\n' || r == '\r' }) {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		pos++
		parts := strings.SplitN(entry, ":", 3)
		if len(parts) < 2 {
			// Not even the name is named: a secret pasted alone is all
			// the entry may be.
			return nil, fmt.Errorf("token entry %d has no ':' (want NAME:SECRET or NAME:SECRET:QUEUE,QUEUE)", pos)
		}
		name, secret := strings.TrimSpace(parts[0]), strings.TrimSpace(parts[1])
		if err := keys.ValidateName("token", name); err != nil {
			return nil, fmt.Errorf("token entry %d: the name before the first ':' must be 1 to 128 bytes of A-Z a-z 0-9 . _ - (want NAME:SECRET or NAME:SECRET:QUEUE,QUEUE)", pos)
		}
		if secret == "" {
			return nil, fmt.Errorf("token entry %d (%s): no secret (want NAME:SECRET or NAME:SECRET:QUEUE,QUEUE)", pos, name)
		}
		if len(secret) < MinSecretBytes {
			return nil, fmt.Errorf("token entry %d (%s): the secret is shorter than %d bytes (use 32 random bytes, hex or base64url; a secret cannot contain ':')", pos, name, MinSecretBytes)
		}
		if p, dup := names[name]; dup {
			return nil, fmt.Errorf("token entry %d (%s): the name of entry %d again; names must be unique", pos, name, p)
		}
		if p, dup := secrets[secret]; dup {
			return nil, fmt.Errorf("token entry %d (%s): the secret of entry %d again; each token needs its own", pos, name, p)
		}
		names[name], secrets[secret] = pos, pos
		t := Token{Name: name, Secret: secret}
		if len(parts) == 3 {
			for i, q := range strings.Split(parts[2], ",") {
				q = strings.TrimSpace(q)
				if keys.ValidateName("queue", q) != nil {
					// The queue is not quoted: a secret with a ':' in it
					// would be cut there, and its tail read as queues.
					return nil, fmt.Errorf("token entry %d (%s): queue %d of its list is not a queue name (A-Z a-z 0-9 . _ -, 1 to 128 bytes; a secret cannot contain ':')", pos, name, i+1)
				}
				t.Queues = append(t.Queues, q)
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// New returns the API's handler, serving every route under /v1/.
//
// It fails without a Client or an Inspector, for a token without a name or
// a secret, for two tokens with the same secret, and for negative limits.
// With no token it serves only requests whose Host is a loopback name or
// address (a page of another site whose name was made to resolve to
// 127.0.0.1 cannot use it), and it refuses cross-origin browser requests
// that write (http.CrossOriginProtection) in every case.
func New(cfg Config) (http.Handler, error) {
	s, err := newServer(cfg)
	if err != nil {
		return nil, err
	}
	return s, nil
}
