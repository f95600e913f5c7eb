package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/taskfleet/async/internal/codec"
)

// taskKeys are the JSON names of TaskObject's fields, the only top-level
// keys a task object may have, spelled exactly (encoding/json alone would
// take "KIND" for "kind").
var taskKeys = map[string]uint16{
	"kind": 1 << 0, "args": 1 << 1, "queue": 1 << 2, "id": 1 << 3, "delay": 1 << 4,
	"process_at": 1 << 5, "max_attempts": 1 << 6, "timeout": 1 << 7, "deadline": 1 << 8,
	"retention": 1 << 9, "meta": 1 << 10, "rate_key": 1 << 11, "partition_key": 1 << 12,
}

// checkTask checks the envelope of the task object b as strictly as args
// are checked (codec.FromJSON): its top-level keys are TaskObject's names
// exactly, each once, and its values but args (which spec converts, with
// the same checks) have no invalid UTF-8, no lone surrogate escape and
// (meta) no key twice: a 400 naming the field under prefix. What is not
// JSON is left to the decoder that follows, which names the fault.
//
// It walks the top level of b once, and converts only the values that hold
// a byte above 0x7F or an escape, and meta: a batch's usual task costs one
// pass over its bytes.
func checkTask(prefix string, b []byte) *apiError {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	var seen uint16
	for i < len(b) {
		if b[i] != '"' {
			return nil
		}
		end := skipString(b, i)
		if end < 0 {
			return nil
		}
		key, esc := string(b[i+1:end-1]), false
		for _, c := range b[i+1 : end-1] {
			if c == '\\' || c >= 0x80 {
				esc = true
				break
			}
		}
		if esc {
			var k string
			if json.Unmarshal(b[i:end], &k) != nil {
				return nil
			}
			if k != key {
				// An escaped or non-ASCII name is none of TaskObject's.
				return &apiError{Status: http.StatusBadRequest, Msg: "unknown field (field names are spelled exactly, without escapes)", Field: join(prefix, clip(k, 100))}
			}
		}
		bit, ok := taskKeys[key]
		if !ok {
			return &apiError{Status: http.StatusBadRequest, Msg: "unknown field (field names are lower case, spelled exactly)", Field: join(prefix, clip(key, 100))}
		}
		if seen&bit != 0 {
			return &apiError{Status: http.StatusBadRequest, Msg: "the field is given twice", Field: join(prefix, key)}
		}
		seen |= bit
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return nil
		}
		i = skipWS(b, i+1)
		vend := skipValue(b, i)
		if vend < 0 {
			return nil
		}
		if key != "args" && (key == "meta" || needsCheck(b[i:vend])) {
			if _, err := codec.FromJSON(nil, b[i:vend], 0); err != nil {
				var je *codec.JSONError
				if errors.As(err, &je) {
					return &apiError{Status: http.StatusBadRequest, Msg: clip(je.Msg, 200), Field: join(prefix, clip(je.Field(key), 100))}
				}
				return &apiError{Status: http.StatusBadRequest, Msg: clip(err.Error(), 200), Field: join(prefix, key)}
			}
		}
		i = skipWS(b, vend)
		if i >= len(b) {
			return nil
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return nil
		default:
			return nil
		}
	}
	return nil
}

// needsCheck reports whether the JSON value v holds a byte that could be
// invalid UTF-8 or an escape that could be a lone surrogate.
func needsCheck(v []byte) bool {
	for _, c := range v {
		if c == '\\' || c >= 0x80 {
			return true
		}
	}
	return false
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string that starts at b[i] (a
// '"'), or -1 when it does not end.
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// skipValue returns the index after the JSON value that starts at b[i], or
// -1 when it does not end (its well-formedness is the decoder's to check).
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e := skipString(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	if j == i {
		return -1
	}
	return j
}
