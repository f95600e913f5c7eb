package codec

import (
	"fmt"
)

// The JSON rule (docs/wire.md, "Args and results as JSON") maps JSON values
// to msgpack and back, so that services in any language can send a task's
// args as JSON and read its result as JSON:
//
//	JSON                          msgpack
//	null                          nil
//	true, false                   bool
//	a number without . e E        int (int64 range), uint (above it), else float64
//	a number with . e E           float64
//	"text"                        str
//	[...]                         array
//	{...}                         map with str keys, in document order
//	{"$bytes": "<base64>"}        bin (standard base64, padded)
//	{"$time": "<RFC 3339>"}       timestamp extension (-1), as Go's time.Time
//
// ToJSON is the inverse; msgpack it meets that JSON cannot spell comes out as
// markers too: {"$float": "NaN"|"+Inf"|"-Inf"}, {"$ext": {"type": n,
// "data": "<base64>"}}, and map keys that are not strings are written as
// their JSON text ("1", "true").

// JSONError says where in a JSON value the rule failed. Path is a JSONPath-like
// name of the value ("files[2].name"; "" for the whole value), Offset the
// byte offset in the input (-1 when unknown).
type JSONError struct {
	Path   string
	Offset int
	Msg    string
}

func (e *JSONError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// FromJSON appends to dst the msgpack of the one JSON value in js, by the
// JSON rule, and returns it. Containers nested deeper than maxDepth (0 means
// DefaultMaxDepth) are refused, as are invalid UTF-8, trailing data, and
// malformed markers. Its errors are *JSONError.
func FromJSON(dst, js []byte, maxDepth int) ([]byte, error) {
	panic(fmt.Sprint("not yet", dst, js, maxDepth))
}

// ToJSON appends to dst the JSON of the one msgpack value in mp, by the
// inverse of the JSON rule, and returns it. mp is checked by the gate
// (Check with DefaultMaxDepth) first: bytes read from Redis are never
// trusted.
func ToJSON(dst, mp []byte) ([]byte, error) {
	panic(fmt.Sprint("not yet", dst, mp))
}
