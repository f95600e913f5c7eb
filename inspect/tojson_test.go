package inspect

import (
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/internal/codec"
)

// toJSON writes args and results by the JSON rule (codec.ToJSON): fields in
// their order, bytes and times as markers; what does not decode, or has no
// JSON form, as a string saying so.
func TestToJSONRule(t *testing.T) {
	type args struct {
		Z    string            `msgpack:"z"`
		Data []byte            `msgpack:"data"`
		At   time.Time         `msgpack:"at"`
		F    float64           `msgpack:"f"`
		M    map[string]string `msgpack:"m"`
	}
	b, err := codec.Marshal(args{Z: "<&>", Data: []byte("hi"), At: time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC), F: 2, M: map[string]string{"b": "1", "a": "2"}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"z":"<&>","data":{"$bytes":"aGk="},"at":{"$time":"2026-01-02T15:04:05Z"},"f":2.0,"m":{"a":"2","b":"1"}}`
	if got := string(toJSON(b)); got != want {
		t.Errorf("toJSON = %s; want %s", got, want)
	}
	if got := string(toJSON([]byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0})); !strings.HasPrefix(got, `"undecodable: codec: malformed msgpack: array at offset 0 declares 4294967295 elements`) {
		t.Errorf("toJSON of a hostile array = %s", got)
	}
	if got := string(toJSON([]byte{0x81, 0x91, 0x01, 0x02})); got != `"not representable as JSON: an array as a map key has no JSON form"` {
		t.Errorf("toJSON of a map keyed by an array = %s", got)
	}
}
