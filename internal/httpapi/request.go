package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// bodyType is what a request body's Content-Type says it holds.
type bodyType int

const (
	bodyAny   bodyType = iota // no Content-Type: JSON, or for a batch JSON lines unless it starts with '['
	bodyJSON                  // application/json
	bodyLines                 // application/x-ndjson, application/jsonl
)

// contentType returns the body type of r, or a 415.
func contentType(r *http.Request) (bodyType, *apiError) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return bodyAny, nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	switch {
	case err != nil:
	case mt == "application/json":
		return bodyJSON, nil
	case mt == "application/x-ndjson", mt == "application/jsonl":
		return bodyLines, nil
	}
	return 0, &apiError{Status: http.StatusUnsupportedMediaType, Msg: fmt.Sprintf("Content-Type %s: send application/json (a batch also takes application/x-ndjson or application/jsonl)", quote(ct))}
}

// openBody checks r's Content-Type and returns its body bounded by limit
// bytes: reading past it fails with an *http.MaxBytesError (see jsonError).
// A Content-Length over limit is refused at once (413).
func (s *server) openBody(w http.ResponseWriter, r *http.Request, limit int64) (io.Reader, bodyType, *apiError) {
	bt, e := contentType(r)
	if e != nil {
		return nil, 0, e
	}
	if r.ContentLength > limit {
		return nil, 0, tooLarge(limit)
	}
	s.bodyDeadline(w, time.Now().Add(s.cfg.BodyTimeout))
	return http.MaxBytesReader(w, r.Body, limit), bt, nil
}

// bodyDeadline sets the read deadline of w's connection (the zero time
// clears it): a body arriving too slowly then fails its read with
// os.ErrDeadlineExceeded (see jsonError), and once the body is read the
// deadline is cleared, so that the connection's end is still seen while
// the answer is being made. A ResponseWriter that cannot (a recorder) is
// left as it is.
func (s *server) bodyDeadline(w http.ResponseWriter, t time.Time) {
	if err := http.NewResponseController(w).SetReadDeadline(t); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.log.Debug("httpapi: setting a read deadline failed", "err", err)
	}
}

// bodyTimedOut is the answer to a body that did not arrive within
// Config.BodyTimeout: 408, and the connection closed (the rest of the
// body may still come).
func (s *server) bodyTimedOut(w http.ResponseWriter) *apiError {
	w.Header().Set("Connection", "close")
	return &apiError{Status: http.StatusRequestTimeout, Msg: fmt.Sprintf("the body did not arrive within %v", s.cfg.BodyTimeout)}
}

// readBody reads r's body: 415 for a Content-Type that is not JSON, 413
// when it is over limit bytes.
func (s *server) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *apiError) {
	body, _, e := s.openBody(w, r, limit)
	if e != nil {
		return nil, e
	}
	n := r.ContentLength
	if n < 0 || n > 64<<10 {
		n = 512
	}
	buf := bytes.NewBuffer(make([]byte, 0, n+1))
	if _, err := buf.ReadFrom(body); err != nil {
		var mb *http.MaxBytesError
		switch {
		case errors.As(err, &mb):
			return nil, tooLarge(limit)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, s.bodyTimedOut(w)
		}
		return nil, &apiError{Status: http.StatusBadRequest, Msg: "reading the body failed: " + clip(err.Error(), 100)}
	}
	s.bodyDeadline(w, time.Time{})
	return buf.Bytes(), nil
}

func tooLarge(limit int64) *apiError {
	return &apiError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("the body is over its limit of %d bytes", limit)}
}

// decode decodes the one JSON value of b into v strictly: unknown fields
// and data after the value are refused. field prefixes the fields of its
// errors ("" for a body that is one task, "tasks[3]" in a batch).
func (s *server) decode(field string, b []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(field, err)
	}
	if trailing(b[dec.InputOffset():]) {
		return &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("data after the JSON value, at byte %d", dec.InputOffset()), Field: field}
	}
	return nil
}

// trailing reports whether b holds anything but JSON white space.
func trailing(b []byte) bool {
	return len(bytes.TrimLeft(b, " \t\r\n")) > 0
}

// jsonError maps an error of json.Decoder.Decode to a 400 naming the field
// where it stopped, under prefix, a 413 for a body over its limit, or a 408
// for a body that did not arrive within Config.BodyTimeout.
func jsonError(prefix string, err error) *apiError {
	var (
		mb  *http.MaxBytesError
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mb):
		return tooLarge(mb.Limit)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &apiError{Status: http.StatusRequestTimeout, Msg: "the body did not arrive within the server's time for it"}
	case errors.Is(err, io.EOF):
		return &apiError{Status: http.StatusBadRequest, Msg: "no JSON value: the body is empty", Field: prefix}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &apiError{Status: http.StatusBadRequest, Msg: "malformed JSON: the value ends early", Field: prefix}
	case errors.As(err, &syn):
		return &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("malformed JSON at byte %d: %s", syn.Offset, clip(syn.Error(), 100)), Field: prefix}
	case errors.As(err, &typ):
		return &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("want %s, not %s", jsonKind(typ.Type.String()), clip(typ.Value, 40)), Field: join(prefix, clip(typ.Field, 100))}
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		if u, err := strconv.Unquote(name); err == nil {
			name = u
		}
		return &apiError{Status: http.StatusBadRequest, Msg: "unknown field", Field: join(prefix, clip(name, 100))}
	}
	return &apiError{Status: http.StatusBadRequest, Msg: "malformed JSON: " + clip(msg, 100), Field: prefix}
}

// jsonKind names the JSON a Go type of TaskObject (or another body) takes.
func jsonKind(goType string) string {
	switch {
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "an integer"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "map["), strings.HasPrefix(goType, "httpapi."), strings.HasPrefix(goType, "struct"):
		return "an object"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	}
	return "another JSON type"
}

// join names field under prefix: "tasks[3]" and "kind" make "tasks[3].kind".
func join(prefix, field string) string {
	switch {
	case prefix == "":
		return field
	case field == "":
		return prefix
	}
	return prefix + "." + field
}

// clip returns s cut to at most n bytes (at a rune boundary), with "..."
// when it was cut: hostile input is never echoed at length.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return cut(s, n) + "..."
}

// cut returns s cut to at most n bytes, at a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// quote quotes s for an error message, at most 100 bytes of it (then
// "..." follows the quotes).
func quote(s string) string {
	if len(s) <= 100 {
		return strconv.Quote(s)
	}
	return strconv.Quote(cut(s, 100)) + "..."
}
