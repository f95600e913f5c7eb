package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// apiError is a refused request: its HTTP status, and the JSON body
// {"error": Msg, "field": Field}. Field names the request's part at fault,
// as a path in the body ("args.path", "tasks[3].kind") or a parameter
// ("queue", "id", "wait"); "" when no one part is.
type apiError struct {
	Status int    `json:"-"`
	Msg    string `json:"error"`
	Field  string `json:"field,omitempty"`
	// RetryAfter, in seconds, is sent as the Retry-After header when
	// positive (503s).
	RetryAfter int `json:"-"`
}

func (e *apiError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// writeJSON writes v as the JSON body of a response with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":"encode the response: ` + jsonEscape(err.Error()) + `"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	_, _ = w.Write(newline)
}

var newline = []byte{'\n'}

// writeError writes e as its JSON body, with WWW-Authenticate for a 401
// and Retry-After when e has one.
func writeError(w http.ResponseWriter, e *apiError) {
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="async"`)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	writeJSON(w, e.Status, e)
}

func jsonEscape(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}
