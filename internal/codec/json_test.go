package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// jsonMapLen and jsonArrayLen stand for a container header in jsonMP.
type (
	jsonMapLen   int
	jsonArrayLen int
)

// jsonMP concatenates the msgpack of parts, as msgpack's Encoder writes
// each (so maps come out in the order given).
func jsonMP(tb testing.TB, parts ...any) []byte {
	tb.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	for _, p := range parts {
		var err error
		switch v := p.(type) {
		case jsonMapLen:
			err = enc.EncodeMapLen(int(v))
		case jsonArrayLen:
			err = enc.EncodeArrayLen(int(v))
		default:
			err = enc.Encode(v)
		}
		if err != nil {
			tb.Fatalf("encode %#v: %v", p, err)
		}
	}
	return buf.Bytes()
}

func TestFromJSON(t *testing.T) {
	long := strings.Repeat("x", 40)
	tm := time.Date(2026, 1, 2, 15, 4, 5, 500_000_000, time.UTC)
	for _, tc := range []struct {
		in   string
		want []byte
	}{
		{`null`, jsonMP(t, nil)},
		{` true `, jsonMP(t, true)},
		{"\t\r\nfalse", jsonMP(t, false)},
		{`0`, []byte{0x00}},
		{`-0`, []byte{0x00}},
		{`127`, []byte{0x7f}},
		{`128`, []byte{0xcc, 0x80}},
		{`255`, []byte{0xcc, 0xff}},
		{`256`, []byte{0xcd, 0x01, 0x00}},
		{`65536`, []byte{0xce, 0, 1, 0, 0}},
		{`4294967296`, []byte{0xcf, 0, 0, 0, 1, 0, 0, 0, 0}},
		{`-1`, []byte{0xff}},
		{`-32`, []byte{0xe0}},
		{`-33`, []byte{0xd0, 0xdf}},
		{`-129`, []byte{0xd1, 0xff, 0x7f}},
		{`-32769`, jsonMP(t, -32769)},
		{`-2147483649`, jsonMP(t, -2147483649)},
		{`9223372036854775807`, jsonMP(t, math.MaxInt64)},
		{`-9223372036854775808`, jsonMP(t, math.MinInt64)},
		{`9223372036854775808`, jsonMP(t, uint64(1<<63))},
		{`18446744073709551615`, jsonMP(t, uint64(math.MaxUint64))},
		{`18446744073709551616`, jsonMP(t, float64(1<<64))},
		{`-9223372036854775809`, jsonMP(t, float64(-(1 << 63)))},
		{`1.5`, jsonMP(t, 1.5)},
		{`3.0`, jsonMP(t, 3.0)},
		{`-0.0`, jsonMP(t, math.Copysign(0, -1))},
		{`1e3`, jsonMP(t, 1000.0)},
		{`1E+3`, jsonMP(t, 1000.0)},
		{`25e-1`, jsonMP(t, 2.5)},
		{`1e-400`, jsonMP(t, 0.0)},
		{`""`, jsonMP(t, "")},
		{`"héllo"`, jsonMP(t, "héllo")},
		{`"` + long + `"`, jsonMP(t, long)},
		{`"a\"b\\c\/d\b\f\n\r\t"`, jsonMP(t, "a\"b\\c/d\b\f\n\r\t")},
		{`"\u00e9\u20AC\ud83d\ude00"`, jsonMP(t, "é€😀")},
		// The escaped string is 32 bytes, decoded 31: a fixstr.
		{`"\u0041` + strings.Repeat("b", 26) + `"`, jsonMP(t, "A"+strings.Repeat("b", 26))},
		{`"\n` + strings.Repeat("b", 30) + `"`, jsonMP(t, "\n"+strings.Repeat("b", 30))},
		{`[]`, jsonMP(t, jsonArrayLen(0))},
		{`[1, "a", null]`, jsonMP(t, jsonArrayLen(3), 1, "a", nil)},
		{`{}`, jsonMP(t, jsonMapLen(0))},
		{`{"b": 1, "a": [true]}`, jsonMP(t, jsonMapLen(2), "b", 1, "a", jsonArrayLen(1), true)},
		{`{"\u0061": 1, "b": 2}`, jsonMP(t, jsonMapLen(2), "a", 1, "b", 2)},
		{`{"$bytes": "aGVsbG8="}`, jsonMP(t, []byte("hello"))},
		{`{"$bytes": ""}`, jsonMP(t, []byte{})},
		{`{"$time": "2026-01-02T15:04:05.5Z"}`, jsonMP(t, tm)},
		{`{"$time": "2026-01-02T16:04:05.5+01:00"}`, jsonMP(t, tm)},
		{`{"$time": "2026-01-02T15:04:05Z"}`, jsonMP(t, tm.Truncate(time.Second))},
		{`{"$time": "2600-01-02T15:04:05Z"}`, jsonMP(t, time.Date(2600, 1, 2, 15, 4, 5, 0, time.UTC))},
		{`{"$time": "1900-01-02T15:04:05.000000001Z"}`, jsonMP(t, time.Date(1900, 1, 2, 15, 4, 5, 1, time.UTC))},
		{`{"$float": "NaN"}`, jsonMP(t, math.NaN())},
		{`{"$float": "+Inf"}`, jsonMP(t, math.Inf(1))},
		{`{"$float": "-Inf"}`, jsonMP(t, math.Inf(-1))},
		// Markers only alone; $ext is not one.
		{`{"$bytes": "aGVsbG8=", "n": 1}`, jsonMP(t, jsonMapLen(2), "$bytes", "aGVsbG8=", "n", 1)},
		{`{"n": 1, "$time": 5}`, jsonMP(t, jsonMapLen(2), "n", 1, "$time", 5)},
		{`{"$ext": {"type": 1, "data": "AA=="}}`, jsonMP(t, jsonMapLen(1), "$ext", jsonMapLen(2), "type", 1, "data", "AA==")},
		{`{"$Bytes": 1}`, jsonMP(t, jsonMapLen(1), "$Bytes", 1)},
		{`[{"$bytes": "AA=="}]`, jsonMP(t, jsonArrayLen(1), []byte{0})},
	} {
		got, err := FromJSON(nil, []byte(tc.in), 0)
		if err != nil {
			t.Errorf("FromJSON(%s): got error %v; want % x", tc.in, err, tc.want)
			continue
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("FromJSON(%s) = % x; want % x", tc.in, got, tc.want)
		}
		// Appending keeps what dst held.
		got, err = FromJSON([]byte("prefix"), []byte(tc.in), 0)
		if err != nil || !bytes.Equal(got, append([]byte("prefix"), tc.want...)) {
			t.Errorf("FromJSON(prefix, %s) = % x, %v; want the prefix and % x", tc.in, got, err, tc.want)
		}
	}
}

// TestFromJSONContainerSizes covers the three header sizes of arrays, maps
// and strings, nested so that an inner header grows inside an outer one.
func TestFromJSONContainerSizes(t *testing.T) {
	for _, n := range []int{15, 16, 31, 32, 255, 256, 65535, 65536} {
		var js strings.Builder
		want := []any{jsonArrayLen(2), jsonMapLen(n)}
		js.WriteString(`[{`)
		for i := range n {
			if i > 0 {
				js.WriteByte(',')
			}
			k := strings.Repeat("k", i%40) + string(rune('a'+i%26)) + itoa(i)
			js.WriteString(`"` + k + `":[` + itoa(i) + `]`)
			want = append(want, k, jsonArrayLen(1), i)
		}
		js.WriteString(`}, "` + strings.Repeat("s", n) + `"]`)
		want = append(want, strings.Repeat("s", n))
		got, err := FromJSON(nil, []byte(js.String()), 0)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if w := jsonMP(t, want...); !bytes.Equal(got, w) {
			t.Errorf("n=%d: FromJSON differs from msgpack's encoding (%d vs %d bytes)", n, len(got), len(w))
		}
		if err := Check(got, DefaultMaxDepth); err != nil {
			t.Errorf("n=%d: Check: %v", n, err)
		}
		var arr []any
		js.Reset()
		for i := range n {
			arr = append(arr, i)
		}
		in, _ := json.Marshal(arr)
		got, err = FromJSON(nil, in, 0)
		if w := jsonMP(t, append([]any{jsonArrayLen(n)}, arr...)...); err != nil || !bytes.Equal(got, w) {
			t.Errorf("array n=%d: FromJSON = %d bytes, %v; want %d bytes", n, len(got), err, len(w))
		}
	}
}

func itoa(i int) string { return string(appendUintText(nil, uint64(i))) }

func appendUintText(b []byte, n uint64) []byte {
	if n >= 10 {
		b = appendUintText(b, n/10)
	}
	return append(b, byte('0'+n%10))
}

func TestFromJSONErrors(t *testing.T) {
	for _, tc := range []struct {
		in     string
		depth  int
		path   string
		offset int
		msg    string // a part of the message
	}{
		{``, 0, "", 0, "no JSON value"},
		{`  `, 0, "", 2, "no JSON value"},
		{`nul`, 0, "", 0, "want a value"},
		{`nulls`, 0, "", 4, "data after the JSON value"},
		{`1 2`, 0, "", 2, "data after the JSON value"},
		{`{} x`, 0, "", 3, "data after"},
		{`01`, 0, "", 0, "leading zero"},
		{`-`, 0, "", 1, "want a digit"},
		{`1.`, 0, "", 2, "decimal point"},
		{`1e`, 0, "", 2, "exponent"},
		{`+1`, 0, "", 0, "want a value"},
		{`.5`, 0, "", 0, "want a value"},
		{`NaN`, 0, "", 0, "want a value"},
		{`1e400`, 0, "", 0, "beyond the range of float64"},
		{`-1e400`, 0, "", 0, "beyond the range of float64"},
		{`"abc`, 0, "", 4, "end of input in a string"},
		{`"a\"`, 0, "", 4, "end of input in a string"},
		{"\"a\tb\"", 0, "", 2, "control character"},
		{"\"a\xffb\"", 0, "", 2, "invalid UTF-8"},
		{"\"a\xed\xa0\x80\"", 0, "", 2, "invalid UTF-8"}, // a surrogate in UTF-8
		{"\"\\n\xc3\"", 0, "", 3, "invalid UTF-8"},
		{`"\x"`, 0, "", 1, `unknown escape \x`},
		{`"\u12"`, 0, "", 1, `malformed \u escape`},
		{`"\u12g4"`, 0, "", 1, `malformed \u escape`},
		{`"\ud800"`, 0, "", 1, `\ud800 is half of a UTF-16 surrogate pair`},
		{`"\ud800\u0041"`, 0, "", 1, `\ud800 is half`},
		{`"\ud800\ud800"`, 0, "", 1, `\ud800 is half`},
		{`"x\udc00"`, 0, "", 2, `\udc00 is half`},
		{`[1,]`, 0, "[1]", 3, "want a value"},
		{`[1 2]`, 0, "", 3, "want ',' or ']'"},
		{`[1`, 0, "", 2, "end of input in an array"},
		{`{"a" 1}`, 0, "", 5, "want ':'"},
		{`{"a":1,}`, 0, "", 7, "want a string key"},
		{`{a:1}`, 0, "", 1, "want a string key"},
		{`{"a":1`, 0, "", 6, "end of input in an object"},
		{`{"a":1 "b":2}`, 0, "", 7, "want ',' or '}'"},
		{`{"files": [{"name": "x"}, {"name": tru}]}`, 0, "files[1].name", 35, "want a value"},
		{`[[0, {"a b": [nope]}]]`, 0, `[0][1]["a b"][0]`, 14, "want a value"},
		{`{"a": 1, "b": 2, "a": 3}`, 0, "a", 17, `key "a" appears twice`},
		{`{"x": {"\u0061": 1, "a": 3}}`, 0, "x.a", 20, `key "a" appears twice`},
		{`{"$time": 1, "$time": 1}`, 0, "$time", 13, "appears twice"},
		{`[[1]]`, 1, "[0]", 1, "nested 2 deep, more than the limit of 1"},
		{`{"a": {}}`, 1, "a", 6, "nested 2 deep"},
		{`{"a": {"b": 1}}`, 1, "a", 6, "nested 2 deep"},
		{`[{"$bytes": "AA==", "x": 1}]`, 1, "[0]", 1, "nested 2 deep"},
		{`{"$bytes": "AA=", "x": 1}`, 0, "", 0, ""},
		{`{"$bytes": "AA="}`, 0, "", 11, "malformed $bytes marker"},
		{`{"a": [{"$bytes": 5}]}`, 0, "a[0]", 18, "malformed $bytes marker"},
		{`{"$bytes": "AB=="}`, 0, "", 11, "malformed $bytes marker"}, // stray bits
		{`{"$bytes": "AA\n=="}`, 0, "", 11, "malformed $bytes marker"},
		{`{"$bytes": "AA"}`, 0, "", 11, "malformed $bytes marker"},
		{`{"$bytes": "aGVsbG8-"}`, 0, "", 11, "malformed $bytes marker"},
		{`{"$time": "2026-01-02"}`, 0, "", 10, "malformed $time marker"},
		{`{"$time": "2026-01-02 15:04:05Z"}`, 0, "", 10, "malformed $time marker"},
		{`{"$time": "0000-01-01T00:00:00+01:00"}`, 0, "", 10, "malformed $time marker"},
		{`{"$time": null}`, 0, "", 10, "malformed $time marker"},
		{`{"$float": "nan"}`, 0, "", 11, "malformed $float marker"},
		{`{"$float": "Inf"}`, 0, "", 11, "malformed $float marker"},
		{`{"$float": 1.5}`, 0, "", 11, "malformed $float marker"},
	} {
		got, err := FromJSON([]byte("dst"), []byte(tc.in), tc.depth)
		if tc.msg == "" {
			if err != nil {
				t.Errorf("FromJSON(%s): %v; want no error", tc.in, err)
			}
			continue
		}
		var je *JSONError
		if !errors.As(err, &je) {
			t.Errorf("FromJSON(%s) = % x, %v; want a *JSONError", tc.in, got, err)
			continue
		}
		if je.Path != tc.path || je.Offset != tc.offset || !strings.Contains(je.Msg, tc.msg) {
			t.Errorf("FromJSON(%s): got path %q offset %d msg %q; want path %q offset %d msg containing %q",
				tc.in, je.Path, je.Offset, je.Msg, tc.path, tc.offset, tc.msg)
		}
		if string(got) != "dst" {
			t.Errorf("FromJSON(%s) on error returned %q; want dst as it was", tc.in, got)
		}
	}
}

func TestJSONErrorField(t *testing.T) {
	for _, tc := range []struct{ path, field string }{
		{"", "args"},
		{"a", "args.a"},
		{"files[2].name", "args.files[2].name"},
		{"[0].a", "args[0].a"},
		{`["a b"]`, `args["a b"]`},
	} {
		e := &JSONError{Path: tc.path}
		if got := e.Field("args"); got != tc.field {
			t.Errorf("Field(args) with path %q = %q; want %q", tc.path, got, tc.field)
		}
		if got := e.Field(""); got != tc.path {
			t.Errorf("Field() with path %q = %q; want the path", tc.path, got)
		}
	}
	if got := (&JSONError{Path: "a.b", Msg: "bad"}).Error(); got != "a.b: bad" {
		t.Errorf("Error() = %q", got)
	}
}

// TestFromJSONDepth checks that FromJSON counts depth as Check does, and
// that markers are not containers.
func TestFromJSONDepth(t *testing.T) {
	nest := func(open, inner, close string, n int) string {
		return strings.Repeat(open, n) + inner + strings.Repeat(close, n)
	}
	for _, tc := range []struct {
		in    string
		depth int // of the msgpack
	}{
		{`1`, 0},
		{`[]`, 1},
		{`{}`, 1},
		{`{"$bytes": "AA=="}`, 0},
		{nest("[", `{"$float": "NaN"}`, "]", 3), 3},
		{nest(`{"a":`, `{"$time": "2026-01-02T15:04:05Z"}`, "}", 5), 5},
		{nest("[", "", "]", DefaultMaxDepth), DefaultMaxDepth},
		{nest("[", "{}", "]", DefaultMaxDepth-1), DefaultMaxDepth},
		{nest("[", "", "]", DefaultMaxDepth+1), DefaultMaxDepth + 1},
		{nest("[", "", "]", 100), 100},
	} {
		for _, limit := range []int{0, 1, 2, 3, 5, 6, DefaultMaxDepth, DefaultMaxDepth + 1, 200} {
			want := limit
			if want == 0 {
				want = DefaultMaxDepth
			}
			mp, err := FromJSON(nil, []byte(tc.in), limit)
			if ok := tc.depth <= want; ok != (err == nil) {
				t.Errorf("FromJSON(%.40s, %d): got error %v; want ok=%v", tc.in, limit, err, ok)
				continue
			}
			if err == nil {
				if err := Check(mp, want); err != nil {
					t.Errorf("FromJSON(%.40s, %d) made msgpack Check refuses: %v", tc.in, limit, err)
				}
			}
		}
	}
}

func TestToJSON(t *testing.T) {
	tm := time.Date(2026, 1, 2, 15, 4, 5, 500_000_000, time.FixedZone("X", 3600))
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{jsonMP(t, nil), `null`},
		{jsonMP(t, true), `true`},
		{jsonMP(t, false), `false`},
		{jsonMP(t, 5), `5`},
		{jsonMP(t, -5), `-5`},
		{[]byte{0xd0, 0x05}, `5`},
		{[]byte{0xcc, 0xff}, `255`},
		{jsonMP(t, int8(-100)), `-100`},
		{jsonMP(t, int16(-1000)), `-1000`},
		{jsonMP(t, int32(-100000)), `-100000`},
		{jsonMP(t, int64(math.MinInt64)), `-9223372036854775808`},
		{jsonMP(t, uint16(1000)), `1000`},
		{jsonMP(t, uint32(100000)), `100000`},
		{jsonMP(t, uint64(math.MaxUint64)), `18446744073709551615`},
		{jsonMP(t, 1.5), `1.5`},
		{jsonMP(t, 3.0), `3.0`},
		{jsonMP(t, -0.0), `0.0`},
		{jsonMP(t, math.Copysign(0, -1)), `-0.0`},
		{jsonMP(t, 0.1), `0.1`},
		{jsonMP(t, 1e20), `100000000000000000000.0`},
		{jsonMP(t, 1e21), `1e+21`},
		{jsonMP(t, 1e-7), `1e-7`},
		{jsonMP(t, 123456789e-15), `1.23456789e-7`},
		{jsonMP(t, math.MaxFloat64), `1.7976931348623157e+308`},
		{jsonMP(t, float32(0.1)), `0.1`},
		{jsonMP(t, float32(16777216)), `16777216.0`},
		{jsonMP(t, float32(1e-7)), `1e-7`},
		{jsonMP(t, math.NaN()), `{"$float":"NaN"}`},
		{jsonMP(t, math.Inf(1)), `{"$float":"+Inf"}`},
		{jsonMP(t, float32(math.Inf(-1))), `{"$float":"-Inf"}`},
		{jsonMP(t, ""), `""`},
		{jsonMP(t, "<a href=\"x\">&amp;</a>"), `"<a href=\"x\">&amp;</a>"`},
		{jsonMP(t, "\\ \b\f\n\r\t \x00\x1f\x7f é \u2028\u2029 😀"), `"\\ \b\f\n\r\t \u0000\u001f` + "\x7f é " + `\u2028\u2029` + " 😀\""},
		{jsonMP(t, "a\xffb\xc3"), `"a\ufffdb\ufffd"`},
		{jsonMP(t, strings.Repeat("s", 300)), `"` + strings.Repeat("s", 300) + `"`},
		{jsonMP(t, []byte("hello")), `{"$bytes":"aGVsbG8="}`},
		{jsonMP(t, []byte{}), `{"$bytes":""}`},
		{jsonMP(t, bytes.Repeat([]byte{0xff}, 300)), `{"$bytes":"` + strings.Repeat("////", 100) + `"}`},
		{jsonMP(t, tm), `{"$time":"2026-01-02T14:04:05.5Z"}`},
		{jsonMP(t, tm.Truncate(time.Second)), `{"$time":"2026-01-02T14:04:05Z"}`},
		{jsonMP(t, time.Date(2600, 1, 2, 15, 4, 5, 7, time.UTC)), `{"$time":"2600-01-02T15:04:05.000000007Z"}`},
		{jsonMP(t, time.Date(1066, 10, 14, 9, 0, 0, 0, time.UTC)), `{"$time":"1066-10-14T09:00:00Z"}`},
		{jsonMP(t, time.Unix(0, 0)), `{"$time":"1970-01-01T00:00:00Z"}`},
		// Timestamps that are not valid, or that RFC 3339 cannot write.
		{[]byte{0xd7, 0xff, 0xff, 0xff, 0xff, 0xfc, 0, 0, 0, 0}, `{"$ext":{"type":-1,"data":"/////AAAAAA="}}`},
		{jsonMP(t, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)), `{"$ext":{"type":-1,"data":"AAAAAAAAADr/9EGA"}}`},
		{[]byte{0xd5, 0xff, 1, 2}, `{"$ext":{"type":-1,"data":"AQI="}}`},
		{[]byte{0xd4, 0x05, 0x07}, `{"$ext":{"type":5,"data":"Bw=="}}`},
		{[]byte{0xd8, 0x80, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, `{"$ext":{"type":-128,"data":"AAECAwQFBgcICQoLDA0ODw=="}}`},
		{[]byte{0xc7, 0x01, 0x7f, 0xaa}, `{"$ext":{"type":127,"data":"qg=="}}`},
		{[]byte{0xc8, 0x00, 0x00, 0x01}, `{"$ext":{"type":1,"data":""}}`},
		{[]byte{0xc9, 0, 0, 0, 1, 0x02, 0x03}, `{"$ext":{"type":2,"data":"Aw=="}}`},
		{jsonMP(t, []any{}), `[]`},
		{jsonMP(t, []any{1, "a", nil, []any{true}}), `[1,"a",null,[true]]`},
		{jsonMP(t, jsonMapLen(0)), `{}`},
		{jsonMP(t, jsonMapLen(2), "b", 1, "a", jsonMapLen(1), "x", []byte("y")), `{"b":1,"a":{"x":{"$bytes":"eQ=="}}}`},
		{jsonMP(t, jsonMapLen(9), 1, "i", -1, "n", uint64(1<<63), "u", true, "t", nil, "z", 1.5, "f", math.NaN(), "g",
			[]byte{1}, "b", time.Unix(1, 0), "m"),
			`{"1":"i","-1":"n","9223372036854775808":"u","true":"t","null":"z","1.5":"f","NaN":"g","AQ==":"b","1970-01-01T00:00:01Z":"m"}`},
		{jsonMP(t, jsonMapLen(1), float32(2), 1), `{"2.0":1}`},
		{jsonMP(t, jsonArrayLen(16), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16), `[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]`},
	} {
		got, err := ToJSON([]byte("dst"), tc.in)
		if err != nil || string(got) != "dst"+tc.want {
			t.Errorf("ToJSON(% x) = %s, %v; want dst%s", tc.in, got, err, tc.want)
		}
		if !json.Valid([]byte(tc.want)) {
			t.Errorf("ToJSON(% x): %s is not valid JSON", tc.in, tc.want)
		}
	}
}

func TestToJSONErrors(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		path string
		msg  string
	}{
		{nil, "", "empty input"},
		{[]byte{0xc1}, "", "reserved"},
		{[]byte{0x92, 0x01}, "", "declares 2 elements"},
		{gateNested(DefaultMaxDepth + 1), "", "more than the limit"},
		{jsonMP(t, jsonMapLen(1), []any{1}, 1), "", "an array as a map key"},
		{jsonMP(t, jsonArrayLen(2), 0, jsonMapLen(1), "a b", jsonMapLen(1), jsonMapLen(0), 1), `[1]["a b"]`, "a map as a map key"},
		{jsonMP(t, jsonMapLen(1), "k", jsonMapLen(1), 7, jsonMapLen(1), []byte{0xd4, 1, 1}, 1), "", ""},
		{append(jsonMP(t, jsonMapLen(1), "k", jsonMapLen(1)), 0xd4, 1, 1, 0xc0), "k", "an extension as a map key"},
	} {
		if tc.msg == "" {
			continue
		}
		got, err := ToJSON([]byte("dst"), tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ToJSON(% x) = %s, %v; want an error containing %q", tc.in, got, err, tc.msg)
			continue
		}
		if string(got) != "dst" {
			t.Errorf("ToJSON(% x) on error returned %q; want dst as it was", tc.in, got)
		}
		var je *JSONError
		if errors.As(err, &je) {
			if je.Path != tc.path {
				t.Errorf("ToJSON(% x): path %q; want %q", tc.in, je.Path, tc.path)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Errorf("ToJSON(% x): %v is neither a *JSONError nor ErrMalformed", tc.in, err)
		}
	}
}

// TestJSONRoundTrip checks both directions of the round trip on documents
// that use every part of the rule.
func TestJSONRoundTrip(t *testing.T) {
	for _, tc := range []struct{ in, compact string }{
		{`null`, ``},
		{`{"a": [1, -2, 3.25, "x", true, false, null, {}, []], "b": {"c": {"$bytes": "AAEC"}}}`,
			`{"a":[1,-2,3.25,"x",true,false,null,{},[]],"b":{"c":{"$bytes":"AAEC"}}}`},
		{`[1.0, 1e2, -0, -0.0, 1.5e-7, 18446744073709551615, 18446744073709551616]`,
			`[1.0,100.0,0,-0.0,1.5e-7,18446744073709551615,18446744073709552000.0]`},
		{`{"t": {"$time": "2026-01-02T16:04:05.123+01:00"}, "f": [{"$float": "NaN"}, {"$float": "-Inf"}]}`,
			`{"t":{"$time":"2026-01-02T15:04:05.123Z"},"f":[{"$float":"NaN"},{"$float":"-Inf"}]}`},
		{`"\u00e9\ud83d\ude00 \u2028 \/ <&>"`, `"é😀 \u2028 / <&>"`},
		{`{"z": 1, "a": 2, "m": {"$bytes": "aGk=", "x": 1}}`, `{"z":1,"a":2,"m":{"$bytes":"aGk=","x":1}}`},
	} {
		if tc.compact == "" {
			tc.compact = tc.in
		}
		mp, err := FromJSON(nil, []byte(tc.in), 0)
		if err != nil {
			t.Fatalf("FromJSON(%s): %v", tc.in, err)
		}
		js, err := ToJSON(nil, mp)
		if err != nil || string(js) != tc.compact {
			t.Errorf("ToJSON(FromJSON(%s)) = %s, %v; want %s", tc.in, js, err, tc.compact)
		}
		mp2, err := FromJSON(nil, js, 0)
		if err != nil || !bytes.Equal(mp2, mp) {
			t.Errorf("FromJSON(ToJSON(x)) = % x, %v; want x = % x", mp2, err, mp)
		}
	}
}

// jsonUpload is a handler's args struct, with the kinds of fields the JSON
// rule serves.
type jsonUpload struct {
	Path     string            `msgpack:"path"`
	Size     int64             `msgpack:"size"`
	Parts    int               `msgpack:"parts"`
	Ratio    float64           `msgpack:"ratio"`
	Big      uint64            `msgpack:"big"`
	Neg      int8              `msgpack:"neg"`
	Public   bool              `msgpack:"public"`
	Data     []byte            `msgpack:"data"`
	At       time.Time         `msgpack:"at"`
	Owner    jsonOwner         `msgpack:"owner"`
	Tags     []string          `msgpack:"tags"`
	Counts   map[string]int    `msgpack:"counts"`
	Labels   map[string]string `msgpack:"labels,omitempty"`
	Parent   *jsonOwner        `msgpack:"parent"`
	NoParent *jsonOwner        `msgpack:"no_parent"`
	Note     string            `msgpack:"note,omitempty"`
	Untagged string
	Any      any `msgpack:"any"`
}

type jsonOwner struct {
	Name string `msgpack:"name"`
	ID   int    `msgpack:"id"`
}

// TestFromJSONGoStruct checks what the issue asks of the rule: a task
// enqueued over HTTP and one enqueued from Go with the same values reach the
// handler identically.
func TestFromJSONGoStruct(t *testing.T) {
	want := jsonUpload{
		Path: "/in/a.bin", Size: 1 << 40, Parts: -3, Ratio: 0.25, Big: math.MaxUint64, Neg: -100,
		Public: true, Data: []byte{0, 1, 2, 0xff},
		At:    time.Date(2026, 1, 2, 15, 4, 5, 123456789, time.UTC),
		Owner: jsonOwner{Name: "ann", ID: 7}, Tags: []string{"a", "b"}, Counts: map[string]int{"x": 1, "y": 2},
		Parent: &jsonOwner{Name: "bob"}, Untagged: "u", Any: "s",
	}
	js := `{
		"path": "/in/a.bin", "size": 1099511627776, "parts": -3, "ratio": 0.25,
		"big": 18446744073709551615, "neg": -100, "public": true,
		"data": {"$bytes": "AAEC/w=="}, "at": {"$time": "2026-01-02T17:04:05.123456789+02:00"},
		"owner": {"id": 7, "name": "ann"}, "tags": ["a", "b"], "counts": {"y": 2, "x": 1},
		"parent": {"name": "bob"}, "no_parent": null, "Untagged": "u", "any": "s", "unknown": [1, 2]
	}`
	mp, err := FromJSON(nil, []byte(js), 0)
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON jsonUpload
	if err := Unmarshal(mp, &fromJSON); err != nil {
		t.Fatalf("Unmarshal(FromJSON): %v", err)
	}
	goMP, err := Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var fromGo jsonUpload
	if err := Unmarshal(goMP, &fromGo); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromJSON, fromGo) {
		t.Errorf("from JSON: %+v\nfrom Go:   %+v", fromJSON, fromGo)
	}
	if !fromGo.At.Equal(want.At) || fromGo.Size != want.Size {
		t.Errorf("from Go: %+v; want %+v", fromGo, want)
	}

	// The inverse: what Go wrote reads back as the same JSON value.
	back, err := ToJSON(nil, goMP)
	if err != nil {
		t.Fatal(err)
	}
	mp2, err := FromJSON(nil, back, 0)
	if err != nil {
		t.Fatalf("FromJSON(ToJSON(%s)): %v", back, err)
	}
	var again jsonUpload
	if err := Unmarshal(mp2, &again); err != nil || !reflect.DeepEqual(again, fromGo) {
		t.Errorf("through ToJSON and back (%s): %+v, %v; want %+v", back, again, err, fromGo)
	}
}

// TestFromJSONNumbersIntoGo pins down what msgpack does with JSON numbers in
// Go fields of other types, which the rule's documentation states.
func TestFromJSONNumbersIntoGo(t *testing.T) {
	decode := func(js string, v any) error {
		t.Helper()
		mp, err := FromJSON(nil, []byte(js), 0)
		if err != nil {
			t.Fatalf("FromJSON(%s): %v", js, err)
		}
		return Unmarshal(mp, v)
	}
	var i struct {
		N int `msgpack:"n"`
	}
	// A float, even a whole one, does not go into an int.
	for _, js := range []string{`{"n": 3.0}`, `{"n": 3.5}`, `{"n": 1e3}`} {
		if err := decode(js, &i); err == nil || !strings.Contains(err.Error(), "invalid code=cb decoding int64") {
			t.Errorf("%s into an int field: got %v (n=%d); want msgpack's invalid code=cb decoding int64", js, err, i.N)
		}
	}
	if err := decode(`{"n": 3}`, &i); err != nil || i.N != 3 {
		t.Errorf(`{"n": 3} into an int field: got %d, %v`, i.N, err)
	}
	// An integer goes into a float.
	var f struct {
		N float64 `msgpack:"n"`
	}
	if err := decode(`{"n": 3}`, &f); err != nil || f.N != 3 {
		t.Errorf(`{"n": 3} into a float64 field: got %v, %v`, f.N, err)
	}
	// A float64 does not go into a float32 (msgpack refuses it, whatever
	// the value); an integer does.
	var f32 struct {
		N float32 `msgpack:"n"`
	}
	for _, js := range []string{`{"n": 1.5}`, `{"n": 2.0}`} {
		if err := decode(js, &f32); err == nil || !strings.Contains(err.Error(), "invalid code=cb decoding float32") {
			t.Errorf("%s into a float32 field: got %v (n=%v); want msgpack's invalid code=cb decoding float32", js, err, f32.N)
		}
	}
	if err := decode(`{"n": 2}`, &f32); err != nil || f32.N != 2 {
		t.Errorf(`{"n": 2} into a float32 field: got %v, %v`, f32.N, err)
	}
	// Integers out of a field's range wrap, as msgpack decodes them from
	// Go's encoding too; a negative one into a uint likewise.
	var small struct {
		N int8 `msgpack:"n"`
		U uint `msgpack:"u"`
	}
	if err := decode(`{"n": 300, "u": -1}`, &small); err != nil || small.N != 44 || small.U != math.MaxUint {
		t.Errorf(`{"n": 300, "u": -1} into int8 and uint fields: got %+v, %v`, small, err)
	}
}

// jsonBenchArgs is a typical task's args, about 100 bytes of JSON.
const jsonBenchArgs = `{"path":"/uploads/2026/01/02/a1b2c3.bin","size":1048576,"owner":"user-42","retries":3,"public":false}`

func BenchmarkFromJSON(b *testing.B) {
	in := []byte(jsonBenchArgs)
	var dst []byte
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		dst, err = FromJSON(dst[:0], in, 0)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFromJSONEscapes is the slower path: escapes, floats, a marker.
func BenchmarkFromJSONEscapes(b *testing.B) {
	in := []byte(`{"name":"caf\u00e9 \"x\"","ratio":0.125,"data":{"$bytes":"AAECAwQFBgc="},"tags":["a","b","c"]}`)
	var dst []byte
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		dst, err = FromJSON(dst[:0], in, 0)
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkToJSON(b *testing.B) {
	mp, err := FromJSON(nil, []byte(jsonBenchArgs), 0)
	if err != nil {
		b.Fatal(err)
	}
	var dst []byte
	b.SetBytes(int64(len(mp)))
	b.ReportAllocs()
	for b.Loop() {
		dst, err = ToJSON(dst[:0], mp)
		if err != nil {
			b.Fatal(err)
		}
	}
}
