package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
)

// `worker dashboard` serves the pages on a loopback address until
// interrupted; the Redis password given in the URL appears in none of
// them; it refuses a non-loopback address without DASHBOARD_TOKEN or a
// user and password.
func TestDashboardCommand(t *testing.T) {
	m := miniredis.RunT(t)
	m.RequireAuth("s3cr3t-pw")
	url := "redis://:s3cr3t-pw@" + m.Addr() + "/0"
	// A workload, through a client of its own.
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), Password: "s3cr3t-pw"})
	defer rdb.Close()
	c, err := client.New(context.Background(), rdb, &client.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h, err := c.Enqueue(context.Background(), Other{}, &client.EnqueueOpts{Queue: "dash"})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuf
	done := make(chan int, 1)
	go func() {
		done <- runCLIContext(ctx, []string{"dashboard", "-http", "127.0.0.1:0", "-redis", url}, nil, &out, &errb, env(nil))
	}()
	addrRe := regexp.MustCompile(`dashboard on (http://127\.0\.0\.1:\d+/)`)
	var base string
	testenv.Eventually(t, 10*time.Second, "the dashboard's address", func() bool {
		if mm := addrRe.FindStringSubmatch(out.String()); mm != nil {
			base = mm[1]
			return true
		}
		return false
	})
	for _, p := range []string{"", "queues/dash", "task?id=" + h.ID(), "workers", "groups", "repeats", "throttles", "api/overview", "queues/bad%20name"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), "s3cr3t-pw") {
			t.Errorf("GET /%s shows the Redis password:\n%s", p, b)
		}
		if p != "queues/bad%20name" && resp.StatusCode != http.StatusOK {
			t.Errorf("GET /%s: %d", p, resp.StatusCode)
		}
		if p == "" && !strings.Contains(string(b), "dash") {
			t.Errorf("overview without the queue:\n%s", b)
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the dashboard did not stop on interrupt")
	}
	if strings.Contains(out.String()+errb.String(), "s3cr3t-pw") {
		t.Errorf("output shows the password:\n%s%s", out.String(), errb.String())
	}

	// Not loopback, no auth: refused before it listens.
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:8080"} {
		var e2 syncBuf
		code := runCLIContext(context.Background(), []string{"dashboard", "-http", addr, "-redis", url}, nil, io.Discard, &e2, env(nil))
		if code != 2 || !strings.Contains(e2.String(), "loopback") {
			t.Errorf("dashboard -http %s without auth: exit %d, %q", addr, code, e2.String())
		}
	}
	// -ui in the run mode checks the same before it starts.
	if _, err := parseConfig([]string{"-ui", "-http", "0.0.0.0:9090"}, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("-ui on 0.0.0.0 without auth: %v", err)
	}
	if _, err := parseConfig([]string{"-ui", "-http", "0.0.0.0:9090"}, env(map[string]string{"DASHBOARD_TOKEN": "t"}), io.Discard); err != nil {
		t.Errorf("-ui on 0.0.0.0 with a token: %v", err)
	}
	if _, err := parseConfig([]string{"-ui"}, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "-http") {
		t.Errorf("-ui without -http: %v", err)
	}
}

// The run mode with -ui serves the dashboard at /ui next to /metrics,
// behind DASHBOARD_TOKEN when set.
func TestWorkerProcessServesUI(t *testing.T) {
	e := testenv.Redis(t)
	if os.Getenv(testenv.EnvCluster) != "" {
		e = testenv.IsolatedRedis(t, 0)
	}
	queue := testenv.Queue(t)
	httpAddr := freeAddr(t)
	var logs syncBuf
	stop := make(chan struct{})
	done := make(chan int, 1)
	go func() {
		done <- runEnv([]string{"-redis", "redis://" + e.Addr, "-queues", queue, "-http", httpAddr, "-ui"},
			env(map[string]string{"DASHBOARD_TOKEN": "tok-123"}), &logs, &logs, stop)
	}()
	get := func(path, token string) int {
		req, _ := http.NewRequest("GET", "http://"+httpAddr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	testenv.Eventually(t, 10*time.Second, "/ui/", func() bool { return get("/ui/", "tok-123") == http.StatusOK })
	if code := get("/ui/", ""); code != http.StatusUnauthorized {
		t.Errorf("/ui/ without the token: %d", code)
	}
	if code := get("/ui/workers", "tok-123"); code != http.StatusOK {
		t.Errorf("/ui/workers: %d", code)
	}
	if code := get("/metrics", ""); code != http.StatusOK {
		t.Errorf("/metrics: %d", code)
	}
	close(stop)
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the process did not stop")
	}
}
