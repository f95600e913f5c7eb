package codec

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// jsonFuzzSeeds are inputs for FuzzFromJSON that reach every branch of the
// rule and every documented refusal. CI runs only these (it fuzzes
// FuzzCheck), so each is here for a reason.
var jsonFuzzSeeds = []string{
	// Scalars and numbers at every encoding boundary.
	`null`, `true`, `false`, `0`, `-0`, `-0.0`, `127`, `128`, `-32`, `-33`, `255`, `256`, `65535`, `65536`,
	`4294967295`, `4294967296`, `-2147483648`, `-2147483649`,
	`9223372036854775807`, `9223372036854775808`, `-9223372036854775808`, `-9223372036854775809`,
	`18446744073709551615`, `18446744073709551616`, `1e400`, `-1e400`, `1e-400`, `1.7976931348623157e308`,
	`1.5`, `3.0`, `1E3`, `1e+3`, `25e-1`, `0.1`, `5e-324`, `123456789012345678901234567890`,
	`01`, `1.`, `.5`, `+1`, `-`, `1e`, `1e+`, `NaN`, `Infinity`,
	// Strings: escapes, surrogates, UTF-8, controls, header sizes.
	`""`, `"abc"`, `"a\"b\\c\/d\b\f\n\r\t"`, `"\u00e9\u20ac\ud83d\ude00"`, `"\u0000"`, `"\u2028\u2029"`,
	`"\ud800"`, `"\udc00"`, `"\ud800\u0041"`, `"\ud800\ud800"`, `"\ud800x"`, `"\\ud800"`, `"\u12"`, `"\x"`,
	"\"a\xffb\"", "\"\xed\xa0\x80\"", "\"\xc3\"", "\"tab\there\"", "\"\\n\xff\"",
	`"` + strings.Repeat("s", 31) + `"`, `"\n` + strings.Repeat("s", 31) + `"`, `"` + strings.Repeat("s", 256) + `"`,
	`"abc`, `"a\"`,
	// Containers, order, duplicates, depth.
	`[]`, `{}`, `[1,"a",null,[true],{}]`, `{"b":1,"a":2}`, `{"a":1,"a":2}`, `{"a":1,"\u0061":2}`,
	`{"x":{"a":1,"b":{"a":2}}}`, `[1,]`, `[1 2]`, `{"a" 1}`, `{"a":1,}`, `{a:1}`, `{"a":1`, `[`,
	`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k3":3}`,
	strings.Repeat("[", DefaultMaxDepth) + strings.Repeat("]", DefaultMaxDepth),
	strings.Repeat("[", DefaultMaxDepth+1) + strings.Repeat("]", DefaultMaxDepth+1),
	strings.Repeat(`{"a":`, DefaultMaxDepth) + `{"$bytes":"AA=="}` + strings.Repeat("}", DefaultMaxDepth),
	strings.Repeat(`[`, DefaultMaxDepth) + `{"$bytes":"AA==","x":1}` + strings.Repeat("]", DefaultMaxDepth),
	// Markers, good and bad.
	`{"$bytes":"aGVsbG8="}`, `{"$bytes":""}`, `{"$bytes":"AB=="}`, `{"$bytes":"AA\n=="}`, `{"$bytes":"AA"}`,
	`{"$bytes":"aGVsbG8-"}`, `{"$bytes":5}`, `{"$bytes":"aGk=","x":1}`, `{"x":1,"$bytes":5}`, `{"$bytes":{"$bytes":"AA=="}}`,
	`{"$time":"2026-01-02T15:04:05.5Z"}`, `{"$time":"2026-01-02T16:04:05.123456789+01:00"}`,
	`{"$time":"1900-01-02T15:04:05Z"}`, `{"$time":"2600-01-02T15:04:05Z"}`, `{"$time":"9999-12-31T23:59:59.999999999Z"}`,
	`{"$time":"0000-01-01T00:00:00+01:00"}`, `{"$time":"2026-01-02"}`, `{"$time":null}`,
	`{"$float":"NaN"}`, `{"$float":"+Inf"}`, `{"$float":"-Inf"}`, `{"$float":"Inf"}`, `{"$float":1}`,
	`{"$ext":{"type":1,"data":"AA=="}}`, `{"$Bytes":"AA=="}`, `{"\u0024bytes":"AA=="}`,
	// Whitespace and trailing data.
	" \t\r\n{ \"a\" : [ 1 , 2 ] } \n", `1 2`, `{} x`, `nulls`, ``, ` `,
	// A typical task.
	jsonBenchArgs,
}

// FuzzFromJSON checks FromJSON against encoding/json and an independent
// reading of the rule's refusals:
//   - FromJSON accepts only what json.Valid accepts, and refuses a valid
//     document exactly when it has one of the documented reasons: invalid
//     UTF-8, a lone surrogate escape, a duplicate key, nesting deeper than
//     DefaultMaxDepth, a malformed marker, a number beyond float64;
//   - its errors are *JSONError, and on error dst is unchanged;
//   - what it makes passes Check; ToJSON of it is valid JSON that FromJSON
//     turns into the same bytes, and that ToJSON writes again unchanged;
//   - that JSON holds the same values as the input, in the same order, with
//     numbers, times and bytes compared by value (see jsonTokens).
//
// It also reads the input as msgpack: ToJSON must not panic, must refuse
// what Check refuses, and must otherwise write valid JSON or refuse a map
// key with a *JSONError.
func FuzzFromJSON(f *testing.F) {
	for _, s := range jsonFuzzSeeds {
		f.Add([]byte(s))
	}
	for _, tc := range gateValidCases(f) {
		if len(tc.in) <= 4096 {
			f.Add(tc.in)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		jsonFuzzToJSON(t, in)
		mp, err := FromJSON([]byte("dst"), in, 0)
		var reason string
		valid := json.Valid(in)
		if valid {
			reason = jsonRefusal(t, in)
		}
		if err != nil {
			var je *JSONError
			if !errors.As(err, &je) {
				t.Fatalf("FromJSON(%q): error %v is not a *JSONError", in, err)
			}
			if string(mp) != "dst" {
				t.Fatalf("FromJSON(%q) on error returned %q; want dst", in, mp)
			}
			if valid && reason == "" {
				t.Fatalf("FromJSON(%q) refused valid JSON with no documented reason: %v", in, err)
			}
			return
		}
		if !valid {
			t.Fatalf("FromJSON(%q) accepted invalid JSON: % x", in, mp)
		}
		if reason != "" {
			t.Fatalf("FromJSON(%q) accepted JSON it must refuse (%s): % x", in, reason, mp)
		}
		if !bytes.HasPrefix(mp, []byte("dst")) {
			t.Fatalf("FromJSON(%q) lost dst: % x", in, mp)
		}
		mp = mp[3:]
		if err := Check(mp, DefaultMaxDepth); err != nil {
			t.Fatalf("FromJSON(%q) = % x, which Check refuses: %v", in, mp, err)
		}
		js, err := ToJSON(nil, mp)
		if err != nil {
			t.Fatalf("ToJSON(FromJSON(%q)): %v", in, err)
		}
		if !json.Valid(js) {
			t.Fatalf("ToJSON(FromJSON(%q)) = %s: not valid JSON", in, js)
		}
		mp2, err := FromJSON(nil, js, 0)
		if err != nil || !bytes.Equal(mp2, mp) {
			t.Fatalf("FromJSON(ToJSON(x)) = % x, %v; want x = % x (JSON %s)", mp2, err, mp, js)
		}
		js2, err := ToJSON(nil, mp2)
		if err != nil || !bytes.Equal(js2, js) {
			t.Fatalf("ToJSON is not stable: %s, then %s (%v)", js, js2, err)
		}
		if want, got := jsonTokens(t, in), jsonTokens(t, js); !reflect.DeepEqual(got, want) {
			t.Fatalf("ToJSON(FromJSON(%q)) = %s\nvalues: %#v\nwant:   %#v", in, js, got, want)
		}
	})
}

// jsonNum is a JSON number as the rule reads it: an integer in the int64 or
// uint64 range (its decimal text), or else a float64.
type jsonNum struct {
	Int   string
	Float uint64 // bits
}

// jsonMarker is a well-formed marker, its value normalized.
type jsonMarker struct{ Name, Value string }

// jsonTokens reads valid JSON with encoding/json's Decoder into a flat list
// of tokens, numbers as jsonNum, well-formed markers as jsonMarker (times
// in UTC, bytes decoded), so that documents that hold the same values in
// the same order have equal lists.
func jsonTokens(t *testing.T, in []byte) []any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(in))
	d.UseNumber()
	var toks []any
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Token(%q): %v", in, err)
		}
		if n, ok := tok.(json.Number); ok {
			tok = jsonNumber(string(n))
		}
		toks = append(toks, tok)
		// {, a marker name, a string, } in a row: a marker, when its
		// string is well formed.
		if k := len(toks) - 4; k >= 0 && toks[k] == json.Delim('{') && tok == json.Delim('}') && (k == 0 || toks[k-1] != json.Delim('{')) {
			name, _ := toks[k+1].(string)
			value, isStr := toks[k+2].(string)
			if v, ok := jsonMarkerValue(name, value); isStr && ok {
				toks = append(toks[:k], jsonMarker{name, v})
			}
		}
	}
	return toks
}

func jsonNumber(s string) jsonNum {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return jsonNum{Int: strconv.FormatInt(i, 10)}
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return jsonNum{Int: strconv.FormatUint(u, 10)}
		}
	}
	f, _ := strconv.ParseFloat(s, 64)
	return jsonNum{Float: math.Float64bits(f)}
}

// jsonMarkerValue reports whether value is well formed for the marker
// name, and its normalized form.
func jsonMarkerValue(name, value string) (string, bool) {
	switch name {
	case "$bytes":
		if strings.ContainsAny(value, "\r\n") {
			return "", false
		}
		b, err := base64.StdEncoding.Strict().DecodeString(value)
		return string(b), err == nil
	case "$time":
		tm, err := time.Parse(time.RFC3339Nano, value)
		if err != nil || tm.UTC().Year() < 0 || tm.UTC().Year() > 9999 {
			return "", false
		}
		return tm.UTC().Format(time.RFC3339Nano), true
	case "$float":
		return value, value == "NaN" || value == "+Inf" || value == "-Inf"
	}
	return "", false
}

// jsonRefusal says why the rule refuses valid JSON in, or "" when it must
// not. It reads in with encoding/json and a scan of its escapes, not with
// FromJSON's code.
func jsonRefusal(t *testing.T, in []byte) string {
	if !utf8.Valid(in) {
		return "invalid UTF-8"
	}
	if jsonLoneSurrogate(in) {
		return "a lone surrogate"
	}
	toks := jsonTokens(t, in)
	// Objects whose one key is a marker name are malformed markers:
	// jsonTokens turned the well-formed ones into jsonMarker.
	type level struct {
		object bool
		keys   map[string]bool
		first  string // key
		n      int    // tokens in it, keys and values
	}
	var stack []*level
	depth := 0
	for _, tok := range toks {
		var top *level
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.object && top.n%2 == 0
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if isKey {
					t.Fatalf("a container as a key?")
				}
				stack = append(stack, &level{object: v == '{', keys: map[string]bool{}})
				if len(stack) > depth {
					depth = len(stack)
				}
				continue
			default:
				stack = stack[:len(stack)-1]
				if top.object && top.n == 2 && isMarkerName(top.first) {
					return "a malformed marker"
				}
			}
		case string:
			if isKey {
				if top.keys[v] {
					return "a duplicate key"
				}
				if top.n == 0 {
					top.first = v
				}
				top.keys[v] = true
			}
		case jsonNum:
			if v.Int == "" && math.IsInf(math.Float64frombits(v.Float), 0) {
				return "a number beyond float64"
			}
		}
		if top != nil && !(tok == json.Delim('}') || tok == json.Delim(']')) {
			top.n++
		} else if len(stack) > 0 {
			stack[len(stack)-1].n++
		}
	}
	if depth > DefaultMaxDepth {
		return "nesting too deep"
	}
	return ""
}

func isMarkerName(s string) bool { return s == "$bytes" || s == "$time" || s == "$float" }

// jsonLoneSurrogate reports whether valid JSON in has a \u escape of a
// UTF-16 surrogate that is not the first of a high and low pair.
func jsonLoneSurrogate(in []byte) bool {
	inStr := false
	for i := 0; i < len(in); i++ {
		c := in[i]
		if !inStr {
			inStr = c == '"'
			continue
		}
		switch c {
		case '"':
			inStr = false
		case '\\':
			if in[i+1] != 'u' {
				i++
				continue
			}
			r, _ := strconv.ParseUint(string(in[i+2:i+6]), 16, 32)
			i += 5
			switch {
			case r >= 0xdc00 && r < 0xe000:
				return true
			case r >= 0xd800 && r < 0xdc00:
				if i+6 >= len(in) || in[i+1] != '\\' || in[i+2] != 'u' {
					return true
				}
				r2, _ := strconv.ParseUint(string(in[i+3:i+7]), 16, 32)
				if r2 < 0xdc00 || r2 >= 0xe000 {
					return true
				}
				i += 6
			}
		}
	}
	return false
}

// jsonFuzzToJSON checks ToJSON on arbitrary bytes taken as msgpack.
func jsonFuzzToJSON(t *testing.T, in []byte) {
	js, err := ToJSON([]byte("dst"), in)
	if checkErr := Check(in, DefaultMaxDepth); checkErr != nil {
		if err == nil || !errors.Is(err, ErrMalformed) {
			t.Fatalf("ToJSON(% x) = %s, %v; want Check's error %v", in, js, err, checkErr)
		}
		return
	}
	if err != nil {
		var je *JSONError
		if !errors.As(err, &je) || !strings.Contains(je.Msg, "as a map key has no JSON form") {
			t.Fatalf("ToJSON(% x): %v; want only a map key refused", in, err)
		}
		if string(js) != "dst" {
			t.Fatalf("ToJSON(% x) on error returned %q; want dst", in, js)
		}
		return
	}
	if !bytes.HasPrefix(js, []byte("dst")) || !json.Valid(js[3:]) {
		t.Fatalf("ToJSON(% x) = %s: not dst and valid JSON", in, js)
	}
}
