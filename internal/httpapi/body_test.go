package httpapi

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/internal/testenv"
)

// TestSlowBody: a body that stops arriving is refused with a JSON 408 once
// Config.BodyTimeout passed, and the connection closed; the wait of an
// outcome, longer than that, is not cut by it.
func TestSlowBody(t *testing.T) {
	t.Parallel()
	a := newAPI(t, testenv.Redis(t), Config{BodyTimeout: 300 * time.Millisecond})
	for _, path := range []string{"/v1/queues/" + a.queue + "/tasks", "/v1/queues/" + a.queue + "/tasks/batch", "/v1/groups"} {
		t.Run(path, func(t *testing.T) {
			conn, err := net.Dial("tcp", a.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// The test fails rather than hangs when the server waits on.
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			_, err = io.WriteString(conn, "POST "+path+" HTTP/1.1\r\nHost: "+a.srv.Listener.Addr().String()+"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{\"kind\": \"k\"")
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer to a body that stopped: %v", err)
			}
			defer resp.Body.Close()
			var body struct{ Error string }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusRequestTimeout || resp.Header.Get("Content-Type") != "application/json" || body.Error == "" || !resp.Close {
				t.Fatalf("status %d, Content-Type %q, error %q, close %v; want a JSON 408 and the connection closed", resp.StatusCode, resp.Header.Get("Content-Type"), body.Error, resp.Close)
			}
		})
	}
	// Outcome waits are answers, not bodies: not cut.
	r := a.do("POST", "/v1/queues/"+a.queue+"/tasks", map[string]any{"kind": "k", "id": "w"}).want(t, http.StatusCreated)
	_ = r
	start := time.Now()
	r = a.do("GET", "/v1/tasks/"+a.queue+"/w/outcome?wait=1s", nil).want(t, http.StatusOK)
	if ended, _ := r.JSON["ended"].(bool); ended || time.Since(start) < time.Second || !strings.Contains(string(r.Body), "pending") {
		t.Fatalf("a 1 s wait after %v: %s; want it waited whole, not ended", time.Since(start), r.Body)
	}
}
