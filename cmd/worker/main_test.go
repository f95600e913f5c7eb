package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/upload"
)

func TestMain(m *testing.M) {
	// A worker process of upload_xproc_test.go runs instead of the tests.
	if testenv.RunSubprocess() {
		return
	}
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigFromFlagsAndEnvironment(t *testing.T) {
	c, err := parseConfig([]string{"-concurrency", "7"}, env(map[string]string{
		"REDIS_URL": "rediss://app:secret@10.0.0.5:6380/2", "QUEUES": "uploads=3, default", "CONCURRENCY": "50", "ROLE": "worker",
		"UPLOAD_ROOTS": "/data,/out", "LOG_LEVEL": "debug",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.concurrency != 7 || c.role != "worker" || c.queues["uploads"] != 3 || c.queues["default"] != 1 || len(c.uploadRoots) != 2 || c.logLevel.String() != "DEBUG" {
		t.Fatalf("config %+v", c)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-queues", "a=0"}, "weight"},
		{[]string{"-queues", " , "}, "no queue"},
		{[]string{"-role", "boss"}, "-role"},
		{[]string{"-concurrency", "-1"}, "-concurrency"},
		{[]string{"-redis", "http://x"}, "-redis"},
		{[]string{"-drain-timeout", "soon"}, "-drain-timeout"},
		{[]string{"-log-format", "xml"}, "-log-format"},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		if _, err := parseConfig(tc.args, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// The binary's process end to end: it serves health, runs an upload from a
// client, and drains on stop.
func TestWorkerProcessRunsUploads(t *testing.T) {
	// The process takes the redis:// URL of one server: in the cluster pass
	// it runs on a miniredis of its own.
	e := testenv.Redis(t)
	if os.Getenv(testenv.EnvCluster) != "" {
		e = testenv.IsolatedRedis(t, 0)
	}
	queue := testenv.Queue(t)
	root := t.TempDir()
	src := filepath.Join(root, "in.txt")
	if err := os.WriteFile(src, []byte("fleet"), 0o644); err != nil {
		t.Fatal(err)
	}
	httpAddr := freeAddr(t)
	var logs syncBuf
	stop := make(chan struct{})
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"-redis", "redis://" + e.Addr, "-queues", queue, "-http", httpAddr, "-upload-roots", root, "-drain-timeout", "5s"}, &logs, &logs, stop)
	}()
	ready := func() int {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	testenv.Eventually(t, 10*time.Second, "/readyz", func() bool { return ready() == http.StatusOK })
	c := testenv.Client(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h, err := c.Enqueue(ctx, upload.Args{Src: src, Dest: filepath.Join(root, "out", "in.txt")}, &client.EnqueueOpts{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	r, err := client.Result[upload.Result](ctx, h)
	if err != nil || r.Bytes != 5 {
		t.Fatalf("upload: %+v, %v\n%s", r, err, logs.String())
	}
	// /metrics counts the upload (the worker's own event counters) and
	// shows the queue (the inspector's snapshot).
	want := fmt.Sprintf(`async_tasks_total{kind="upload",outcome="succeeded",queue=%q} 1`, queue)
	var body string
	testenv.Eventually(t, 10*time.Second, "/metrics to count the upload", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK && strings.Contains(body, want) &&
			strings.Contains(body, fmt.Sprintf(`async_queue_tasks{queue=%q,state="waiting"} 0`, queue))
	})
	if !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics has no Go runtime metrics:\n%s", body)
	}
	// The container's health check, while the process runs and after.
	health := func() int {
		return runCLIContext(context.Background(), []string{"healthcheck", "-http", httpAddr}, nil, io.Discard, io.Discard, env(nil))
	}
	if code := health(); code != 0 {
		t.Errorf("healthcheck of the running worker: exit %d", code)
	}
	close(stop)
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d\n%s", code, logs.String())
		}
	case <-ctx.Done():
		t.Fatal("the process did not drain")
	}
	if code := health(); code != 1 {
		t.Errorf("healthcheck of the stopped worker: exit %d, want 1", code)
	}
	if !strings.Contains(logs.String(), `"msg":"stopped"`) {
		t.Errorf("no structured stop log:\n%s", logs.String())
	}
	// Durations are logged as strings, not nanoseconds.
	if !strings.Contains(logs.String(), `"msg":"draining","timeout":"5s"`) {
		t.Errorf("no draining line with the timeout as a string:\n%s", logs.String())
	}
}

// The README's demo, small: every pattern uploads its files and the table
// says so.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	var out syncBuf
	code := run([]string{"demo", "-n", "12", "-spread", "300ms", "-rate", "60", "-invokeall", "3", "-dir", dir, "-s3-files", "6", "-s3-large", "1"}, &out, &out, nil)
	if code != 0 {
		t.Fatalf("exit code %d:\n%s", code, out.String())
	}
	for _, p := range []string{"ForkJoin", "InvokeAll", "Throttle", "Spread"} {
		files, _ := filepath.Glob(filepath.Join(dir, p, "out", "*.txt"))
		if len(files) != 12 {
			t.Errorf("%s uploaded %d files, want 12", p, len(files))
		}
		found := false
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, p) && strings.Contains(line, " ok") && strings.Contains(line, " 12 ") {
				found = true
			}
		}
		if !found {
			t.Errorf("no table row for %s:\n%s", p, out.String())
		}
	}
	if !strings.Contains(out.String(), "Asked for: InvokeAll at most 3") {
		t.Errorf("no summary:\n%s", out.String())
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[0] == "InvokeAll" && f[1] == "12" && f[4] != "1" && f[4] != "2" && f[4] != "3" {
			t.Errorf("InvokeAll(3) ran %s at once", f[4])
		}
	}
	// The S3 part: the files into the embedded server, one of them in
	// parts, every checksum verified.
	for _, want := range []string{"Uploading to S3: 7 files (1 of them multipart", "0/7 uploads done",
		"S3: 7 objects", "6 single PUTs, 1 multipart in 2 parts", "S3: checksums verified"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in the demo's output:\n%s", want, out.String())
		}
	}
	if code := run([]string{"demo", "-n", "0"}, io.Discard, io.Discard, nil); code != 2 {
		t.Errorf("demo -n 0: exit code %d, want 2", code)
	}
}
