package httpapi

import (
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
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
	// MaxBodyBytes bounds the body of a request other than a batch.
	// Defaults to 4 MiB.
	MaxBodyBytes int64
	// MaxBatchBytes bounds the body of a batch. Defaults to 64 MiB.
	MaxBatchBytes int64
	// MaxBatchTasks bounds the tasks of one batch, and the members of one
	// group. Defaults to 10000.
	MaxBatchTasks int
	// MaxWait bounds the wait of an outcome request (?wait=). Defaults to
	// 5 minutes.
	MaxWait time.Duration
	// Now is the caller's clock (durations such as "delay" and "deadline"
	// count from it). Defaults to time.Now.
	Now func() time.Time
}

// ErrNoToken is returned by CheckAddr for an address that is not loopback
// when no token is configured.
var ErrNoToken = errors.New("the API has no token configured, so it serves only a loopback address")

// CheckAddr returns an error when the API would serve addr ("host:port")
// without authentication on anything but a loopback address (127.0.0.0/8,
// ::1, localhost).
func CheckAddr(addr string, tokens bool) error {
	panic(fmt.Sprint("not yet", addr, tokens))
}

// ParseTokens reads tokens from the environment's form (API_TOKENS):
// entries separated by ";" or newlines, each "NAME:SECRET" or
// "NAME:SECRET:QUEUE,QUEUE"; blank entries are skipped. The error names the
// bad entry by its position and name, never its secret.
func ParseTokens(s string) ([]Token, error) {
	panic(fmt.Sprint("not yet", s))
}

// New returns the API's handler, serving every route under /v1/.
func New(cfg Config) (http.Handler, error) {
	panic(fmt.Sprint("not yet", cfg))
}
