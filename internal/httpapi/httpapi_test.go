package httpapi

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
)

func TestCheckAddr(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:8080", "127.1.2.3:0", "[::1]:80", "localhost:9000", "LOCALHOST:1"} {
		if err := CheckAddr(addr, false); err != nil {
			t.Errorf("CheckAddr(%q, false): %v", addr, err)
		}
	}
	for _, addr := range []string{"0.0.0.0:8080", ":8080", "[::]:80", "10.0.0.1:80", "example.com:80", "127.0.0.1"} {
		if err := CheckAddr(addr, false); !errors.Is(err, ErrNoToken) {
			t.Errorf("CheckAddr(%q, false): %v, want ErrNoToken", addr, err)
		}
		if err := CheckAddr(addr, true); err != nil {
			t.Errorf("CheckAddr(%q, true): %v", addr, err)
		}
	}
}

func TestParseTokens(t *testing.T) {
	got, err := ParseTokens(" ops: s3cret-1-0123456 ;\n\n ci:s3cret-2-0123456:uploads, thumbs \r\nlast:s3cret-3-0123456:mail;")
	if err != nil {
		t.Fatal(err)
	}
	want := []Token{
		{Name: "ops", Secret: "s3cret-1-0123456"},
		{Name: "ci", Secret: "s3cret-2-0123456", Queues: []string{"uploads", "thumbs"}},
		{Name: "last", Secret: "s3cret-3-0123456", Queues: []string{"mail"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if got, err := ParseTokens(" ;\n "); err != nil || len(got) != 0 {
		t.Fatalf("blank: %v, %v", got, err)
	}
	const secret = "Zm9vYmFyLXNlY3JldC12YWx1ZQ"
	for _, c := range []struct{ in, says string }{
		{"ops:" + secret + ";" + secret, "entry 2 has no ':'"},
		{"ops:", "entry 1 (ops): no secret"},
		{":" + secret, "entry 1: the name"},
		{"o p:" + secret, "entry 1: the name"},
		{"ops:" + secret + ";ops:" + secret + "x", "entry 2 (ops): the name of entry 1 again"},
		{"ops:" + secret + ";ci:" + secret, "entry 2 (ci): the secret of entry 1 again"},
		{"ops:" + secret + ":uploads,,x", "entry 1 (ops): queue 2 of its list"},
		{"ops:" + secret + ":" + secret + "/x", "entry 1 (ops): queue 1 of its list"},
		{"ops:" + secret + ";ci:x", "entry 2 (ci): the secret is shorter than 16 bytes"},
		{"ops:" + secret + ";ci:" + secret[:15] + ";", "entry 2 (ci): the secret is shorter than 16 bytes"},
		// A ':' meant as part of the secret: the part before it is short.
		{"ops:abc:" + secret, "entry 1 (ops): the secret is shorter than 16 bytes"},
	} {
		_, err := ParseTokens(c.in)
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("ParseTokens(%q): %v; want an error saying %q", c.in, err, c.says)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("ParseTokens(%q): the error shows the secret: %v", c.in, err)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	env := testenv.Redis(t)
	c := testenv.Client(t, env)
	in := inspect.New(env.RDB)
	for name, cfg := range map[string]Config{
		"no client":            {Inspector: in},
		"no inspector":         {Client: c},
		"negative limit":       {Client: c, Inspector: in, MaxBodyBytes: -1},
		"token without secret": {Client: c, Inspector: in, Tokens: []Token{{Name: "a"}}},
		"token without name":   {Client: c, Inspector: in, Tokens: []Token{{Secret: "s"}}},
		"same secret twice":    {Client: c, Inspector: in, Tokens: []Token{{Name: "a", Secret: "s"}, {Name: "b", Secret: "s"}}},
		"bad token queue":      {Client: c, Inspector: in, Tokens: []Token{{Name: "a", Secret: "s", Queues: []string{"a b"}}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New took it", name)
		} else if strings.Contains(err.Error(), `"s"`) {
			t.Errorf("%s: the error shows a secret: %v", name, err)
		}
	}
}
