package dashboard

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/taskfleet/async/inspect"
)

func TestUnescapeHTML(t *testing.T) {
	for _, v := range []string{`<a href="x">&amp;</a>`, `\u003c as text`, `back\slash \\u003c`, "", `\`, `x\`} {
		b, _ := json.Marshal(v)
		var back string
		if err := json.Unmarshal([]byte(unescapeHTML(string(b))), &back); err != nil || back != v {
			t.Errorf("%q: marshalled %s, unescaped %s, reads back %q, %v", v, b, unescapeHTML(string(b)), back, err)
		}
	}
}

func TestShortAndValid(t *testing.T) {
	if got := short(5, "abcdefgh"); got != "abcd…" {
		t.Errorf("short: %q", got)
	}
	if got := short(10, "a\xffb\n\tc"); got != "a\uFFFDb c" {
		t.Errorf("short of invalid UTF-8: %q", got)
	}
}

func TestQuantile(t *testing.T) {
	// 100 observations: 50 under 0.1, 40 under 1, 10 under 10.
	bounds := []float64{0.1, 1, 10}
	cum := []uint64{50, 90, 100}
	for _, c := range []struct{ q, want float64 }{{0.5, 0.1}, {0.7, 0.55}, {0.95, 5.5}} {
		if got := quantile(c.q, bounds, cum, 100); got < c.want-1e-9 || got > c.want+1e-9 {
			t.Errorf("q%v: %v, want %v", c.q, got, c.want)
		}
	}
}

func TestChart(t *testing.T) {
	now := time.Unix(6000, 0)
	c := makeChart([]inspect.MinuteStat{{Minute: now, Processed: 10, Failed: 5}, {Minute: now.Add(time.Minute), Processed: 0}})
	if c.Max != 10 || c.Total != 10 || c.FailedTotal != 5 || c.Processed != "0.0,2.0 600.0,118.0" {
		t.Errorf("chart %+v", c)
	}
}
