package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Other is a second kind, for the commands that filter by kind.
type Other struct{}

func (Other) Kind() string { return "cli.other" }

// Each command's -h lists its own flags and no other's (enqueue -h listed
// -n, -rate and -watch, the flags of every command), `worker -h` lists the
// commands, and `worker task -h` lists task's subcommands (it answered
// "unknown command").
func TestCLIHelp(t *testing.T) {
	redisFlags := []string{"redis", "redis-cluster", "redis-sentinel", "redis-sentinel-master", "redis-sentinel-password"}
	own := map[string][]string{
		"queues": {"watch", "rate", "shards"}, "tasks": {"state", "kind", "limit", "cursor"},
		"task show": nil, "task cancel": nil, "queue pause": nil, "queue resume": nil, "queue delete": {"force"},
		"dead list": {"kind", "limit", "cursor"}, "dead retry-all": {"kind"}, "dead purge-all": {"kind"},
		"dead retry": nil, "dead purge": nil, "workers": nil, "groups": {"queue"}, "group": {"watch"},
		"repeats": nil, "repeats list": nil, "repeats remove": nil,
		"enqueue":     {"args", "id", "delay", "max-attempts", "timeout", "deadline", "meta", "rate-key", "partition-key", "stdin"},
		"healthcheck": {"http", "ready", "timeout", "tls-cert"}, "version": nil, "dashboard": {"http", "read-only", "base-path"},
	}
	flagLine := regexp.MustCompile(`(?m)^  -([a-z-]+)`)
	for _, c := range commands {
		want, ok := own[c.name]
		if !ok {
			t.Errorf("no expected flags for %q", c.name)
			continue
		}
		want = append([]string{}, want...)
		if !c.offline {
			want = append(want, redisFlags...)
		}
		if !c.plain {
			want = append(want, "json")
		}
		var out, errb syncBuf
		args := append(strings.Fields(c.name), "-h")
		if code := runCLIContext(context.Background(), args, nil, &out, &errb, env(nil)); code != 0 {
			t.Errorf("worker %s -h: exit %d\n%s", c.name, code, errb.String())
		}
		h := errb.String()
		if !strings.HasPrefix(h, "usage: worker "+c.name) {
			t.Errorf("worker %s -h does not start with its usage:\n%s", c.name, h)
		}
		var got []string
		for _, m := range flagLine.FindAllStringSubmatch(h, -1) {
			got = append(got, m[1])
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("worker %s -h lists flags %v, want %v", c.name, got, want)
		}
	}

	var out syncBuf
	if code := runEnv([]string{"-h"}, env(nil), &out, &out, nil); code != 0 {
		t.Fatalf("worker -h: exit %d", code)
	}
	for _, c := range commands {
		if !strings.Contains(out.String(), "  worker "+c.name+" ") {
			t.Errorf("worker -h does not list %q:\n%s", c.name, out.String())
		}
	}
	for group, subs := range map[string][]string{"task": {"show", "cancel"}, "queue": {"pause", "resume", "delete"},
		"dead": {"list", "retry-all", "purge-all", "retry", "purge"}, "repeats": {"list", "remove"}} {
		var errb syncBuf
		args := []string{group, "-h"}
		if group == "repeats" {
			continue // `worker repeats` is a command of its own: its -h is checked above
		}
		if code := runCLIContext(context.Background(), args, nil, &out, &errb, env(nil)); code != 0 {
			t.Errorf("worker %s -h: exit %d\n%s", group, code, errb.String())
		}
		for _, s := range subs {
			if !strings.Contains(errb.String(), "worker "+group+" "+s) {
				t.Errorf("worker %s -h does not list %s:\n%s", group, s, errb.String())
			}
		}
	}
}

// REDIS_URL's password appears nowhere: not in -h (which printed
// redis://app:s3cret@…), not in errors, not in the worker's logs.
func TestCLIRedactsPasswords(t *testing.T) {
	const pass = "s3cret-Pw"
	m := miniredis.RunT(t)
	m.RequireUserAuth("app", pass)
	good := map[string]string{"REDIS_URL": "redis://app:" + pass + "@" + m.Addr() + "/0", "REDIS_SENTINEL_PASSWORD": "sentinel-" + pass}
	check := func(what, s string) {
		t.Helper()
		if strings.Contains(s, pass) {
			t.Errorf("%s shows the password:\n%s", what, s)
		}
	}

	var out syncBuf
	if code := runEnv([]string{"-h"}, env(good), &out, &out, nil); code != 0 {
		t.Fatalf("worker -h: exit %d", code)
	}
	check("worker -h", out.String())
	if want := "redis://app:xxxxx@" + m.Addr() + "/0"; !strings.Contains(out.String(), want) {
		t.Errorf("worker -h does not show the URL as %s:\n%s", want, out.String())
	}
	for _, c := range commands {
		var errb syncBuf
		runCLIContext(context.Background(), append(strings.Fields(c.name), "-h"), nil, &out, &errb, env(good))
		check("worker "+c.name+" -h", errb.String())
	}

	// Errors: a URL that does not parse, a server that refuses the
	// password, one that is not there.
	bad := []map[string]string{
		{"REDIS_URL": "redis://app:" + pass + "@[::1/0"},
		{"REDIS_URL": "redis://app:" + pass + "x@" + m.Addr() + "/0"},
		{"REDIS_URL": "redis://app:" + pass + "@" + freeAddr(t) + "/0"},
		{"REDIS_URL": "redis://app:" + pass + "@" + m.Addr() + "/0", "REDIS_CLUSTER_ADDRS": m.Addr(), "REDIS_SENTINEL_ADDRS": m.Addr()},
	}
	for _, envs := range bad {
		var o, errb syncBuf
		code := runCLIContext(context.Background(), []string{"queues"}, nil, &o, &errb, env(envs))
		if code == 0 {
			t.Errorf("queues with %v: exit 0", envs)
		}
		check(fmt.Sprintf("queues with %v: stderr", envs["REDIS_URL"]), errb.String())
		check("queues: stdout", o.String())
		var logs syncBuf
		code = runEnv([]string{"-role", "worker"}, env(envs), &logs, &logs, nil)
		if code == 0 {
			t.Errorf("worker with %v: exit 0", envs)
		}
		check("the worker's output", logs.String())
	}

	var demo syncBuf
	if code := runEnv([]string{"demo", "-n", "1", "-redis", "redis://app:" + pass + "@[::1/0"}, env(nil), &demo, &demo, nil); code != 1 {
		t.Errorf("demo on a bad URL: exit %d, want 1", code)
	}
	check("the demo's error", demo.String())

	// The worker's logs, while it runs on that server.
	var logs syncBuf
	stop := make(chan struct{})
	done := make(chan int, 1)
	go func() {
		done <- runEnv([]string{"-queues", testenv.Queue(t), "-log-level", "debug"}, env(good), &logs, &logs, stop)
	}()
	testenv.Eventually(t, 10*time.Second, "the worker to start", func() bool {
		return strings.Contains(logs.String(), "worker started")
	})
	close(stop)
	if code := <-done; code != 0 {
		t.Errorf("exit %d\n%s", code, logs.String())
	}
	check("the worker's logs", logs.String())
	if !strings.Contains(logs.String(), "redis://app:xxxxx@") {
		t.Errorf("the worker does not log its Redis, redacted:\n%s", logs.String())
	}
}

// Every -json output has snake_case keys (dead list -json had "ID"),
// except inside what users wrote: args, results, meta, queue names.
func TestCLIJSONKeys(t *testing.T) {
	tg := cliTarget(t)
	queue := testenv.Queue(t)
	testenv.StartWorker(t, tg.RDB, queue, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Echo) (map[string]int, error) {
			if a.Fail {
				return nil, worker.Permanent(errors.New("asked to fail"))
			}
			return map[string]int{"Doubled": a.N * 2}, nil
		})
	}, false)
	ok := tg.cmd(t, 0, "enqueue", queue, "cli.echo", "-args", `{"n": 2, "CamelArg": 1}`, "-meta", "Team=A")
	dead := tg.cmd(t, 0, "enqueue", queue, "cli.echo", "-args", `{"fail": true}`)
	later := tg.cmd(t, 0, "enqueue", queue, "cli.echo", "-delay", "1h", "-meta", "Team=A")
	testenv.Eventually(t, 10*time.Second, "the tasks to end", func() bool {
		a := jsonOf[map[string]any](t, tg.cmd(t, 0, "task", "show", ok, "-json"))
		b := jsonOf[map[string]any](t, tg.cmd(t, 0, "task", "show", dead, "-json"))
		return a["state"] == "succeeded" && b["state"] == "dead"
	})
	c := testenv.Client(t, tg.Env)
	ctx := context.Background()
	g, err := patterns.ForkJoin(ctx, c, []client.Spec{{Args: Echo{N: 1}, Opts: &client.EnqueueOpts{Queue: queue}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	name := "cli-" + queue[len(queue)-8:]
	if _, err := patterns.Repeat(ctx, c, name, client.Spec{Args: Echo{}, Opts: &client.EnqueueOpts{Queue: queue}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = patterns.RemoveRepeat(context.Background(), c, name) })

	snake := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch t2 := v.(type) {
		case map[string]any:
			for k, x := range t2 {
				if !snake.MatchString(k) {
					t.Errorf("key %q at %s is not snake_case", k, path)
				}
				switch k {
				case "args", "result", "meta":
					continue // the user's
				case "queues":
					if _, isMap := x.(map[string]any); isMap {
						continue // queue name → weight
					}
				}
				walk(path+"."+k, x)
			}
		case []any:
			for i, x := range t2 {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		}
	}
	for _, args := range [][]string{
		{"queues"}, {"tasks", queue, "-state", "dead"}, {"tasks", queue, "-state", "scheduled"},
		{"task", "show", ok}, {"task", "show", dead}, {"task", "show", later}, {"dead", "list", queue},
		{"workers"}, {"groups", "-queue", queue}, {"group", g.ID()}, {"repeats"}, {"version"},
		{"enqueue", queue, "cli.echo", "-delay", "1h"}, {"queue", "pause", queue}, {"queue", "resume", queue},
		{"dead", "purge-all", queue, "-kind", "cli.none"}, {"task", "cancel", later},
	} {
		out := tg.cmd(t, 0, append(args, "-json")...)
		walk(strings.Join(args[:1], " "), jsonOf[any](t, out))
	}
	// Bulk enqueue answers an array, queues -watch a line per table.
	walk("enqueue -stdin", jsonOf[any](t, tg.cmdIn(t, 0, `{"args": {"n": 1}}`, "enqueue", "-stdin", queue, "cli.echo", "-json")))
}

func (tg *target) cmdIn(t *testing.T, want int, stdin string, args ...string) string {
	t.Helper()
	code, out, errs := tg.run(t, stdin, args...)
	if code != want {
		t.Fatalf("worker %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, want, out, errs)
	}
	return strings.TrimSpace(out)
}

// enqueue's flags reach the task, and -stdin enqueues JSON lines, all
// checked before any is sent.
func TestCLIEnqueue(t *testing.T) {
	tg := cliTarget(t)
	queue, other := testenv.Queue(t), testenv.Queue(t)
	type seen struct {
		meta     map[string]string
		deadline time.Time
		at       time.Time
	}
	var mu sync.Mutex
	got := map[int]seen{}
	testenv.StartWorker(t, tg.RDB, queue, &worker.Config{Queues: map[string]int{queue: 1, other: 1}}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Echo) (int, error) {
			dl, _ := ctx.Deadline()
			mu.Lock()
			got[a.N] = seen{meta: worker.Meta(ctx), deadline: dl, at: time.Now()}
			mu.Unlock()
			return a.N, nil
		})
	}, false)
	c := testenv.Client(t, tg.Env)
	ctx := context.Background()
	waitFor := func(id string) {
		t.Helper()
		h, err := c.Task(id)
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := h.Outcome(wctx); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}

	// The flags, on a task that waits: what Info and task show read back.
	out := tg.cmd(t, 0, "enqueue", queue, "cli.echo", "-args", `{"n": 1}`, "-id", "e1", "-delay", "1h", "-max-attempts", "3",
		"-meta", "a=1", "-meta", "b=x=y", "-rate-key", "s3:bucket", "-json")
	if m := jsonOf[map[string]any](t, out); m["id"] != queue+"/e1" || m["duplicate"] != false {
		t.Fatalf("enqueue -json: %v", m)
	}
	if m := jsonOf[map[string]any](t, tg.cmd(t, 0, "enqueue", queue, "cli.echo", "-id", "e1", "-json")); m["duplicate"] != true {
		t.Errorf("enqueue of the same -id again: %v", m)
	}
	h, _ := c.Task(queue + "/e1")
	in, err := h.Info(ctx)
	if err != nil || in.State != client.StateScheduled || in.MaxAttempts != 3 || in.Kind != "cli.echo" {
		t.Fatalf("e1: %+v, %v", in, err)
	}
	show := jsonOf[map[string]any](t, tg.cmd(t, 0, "task", "show", queue+"/e1", "-json"))
	if fmt.Sprint(show["meta"]) != "map[a:1 b:x=y]" || show["rate_key"] != "s3:bucket" || fmt.Sprint(show["args"]) != "map[n:1]" || show["max_attempts"] != float64(3) {
		t.Errorf("task show e1: %v", show)
	}
	part := tg.cmd(t, 0, "enqueue", other, "cli.echo", "-args", `{"n": 9}`, "-partition-key", "user:1")
	waitFor(part)
	if show := jsonOf[map[string]any](t, tg.cmd(t, 0, "task", "show", part, "-json")); show["state"] != "succeeded" {
		t.Errorf("task show %s: %v", part, show)
	}

	// -timeout and -deadline bound the handler's ctx: the attempt's start
	// plus the timeout; the deadline, given as a time.
	before := time.Now()
	waitFor(tg.cmd(t, 0, "enqueue", queue, "cli.echo", "-args", `{"n": 2}`, "-timeout", "30s"))
	deadline := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	waitFor(tg.cmd(t, 0, "enqueue", queue, "cli.echo", "-args", `{"n": 3}`, "-deadline", deadline.Format(time.RFC3339)))
	mu.Lock()
	s2, s3 := got[2], got[3]
	mu.Unlock()
	if s2.deadline.Before(before.Add(30*time.Second)) || s2.deadline.After(s2.at.Add(30*time.Second)) {
		t.Errorf("-timeout 30s: the handler's deadline is %v, want 30s after its start (between %v and %v)", s2.deadline, before.Add(30*time.Second), s2.at.Add(30*time.Second))
	}
	// The deadline is checked in Redis' time; the handler's ctx carries
	// it converted with the measured clock offset (the same machine here).
	if d := s3.deadline.Sub(deadline); d < -time.Second || d > time.Second {
		t.Errorf("-deadline %v: the handler's deadline is %v", deadline, s3.deadline)
	}

	// Bulk: three lines (and a blank one), the positional arguments and
	// -meta the defaults of each.
	lines := `{"args": {"n": 10}, "id": "b1"}
{"args": {"n": 11}, "id": "b2", "meta": {"x": "y", "team": "b"}}

{"queue": "` + other + `", "args": {"n": 12}, "max_attempts": 2}
`
	var rows []struct {
		ID        string `json:"id"`
		Duplicate bool   `json:"duplicate"`
	}
	rows = jsonOf[[]struct {
		ID        string `json:"id"`
		Duplicate bool   `json:"duplicate"`
	}](t, tg.cmdIn(t, 0, lines, "enqueue", "-stdin", queue, "cli.echo", "-meta", "team=a", "-meta", "env=test", "-json"))
	if len(rows) != 3 || rows[0].ID != queue+"/b1" || rows[1].ID != queue+"/b2" || !strings.HasPrefix(rows[2].ID, other+"/") {
		t.Fatalf("enqueue -stdin: %+v", rows)
	}
	for _, r := range rows {
		waitFor(r.ID)
	}
	mu.Lock()
	m10, m11, m12 := got[10].meta, got[11].meta, got[12].meta
	mu.Unlock()
	if fmt.Sprint(m10) != "map[env:test team:a]" || fmt.Sprint(m11) != "map[env:test team:b x:y]" || fmt.Sprint(m12) != "map[env:test team:a]" {
		t.Errorf("metadata: %v, %v, %v", m10, m11, m12)
	}

	// A bad line anywhere: nothing is sent, and the error names the line.
	for _, tc := range []struct{ line, want string }{
		{`{"args": {"n": 20}, "delay": "soon"}`, `stdin line 3: delay "soon"`},
		{`{"args": {"n": 20}, "colour": "red"}`, `stdin line 3: json: unknown field "colour"`},
		{`{"args": {"n": 20}, "id": "no spaces"}`, `stdin line 3: `},
		{`{"args": {"n": 20}, "kind": ""}`, `stdin line 3: no kind`},
		{`{"args": {"n": 20}} {}`, `stdin line 3: more than one JSON value`},
		{`not json`, `stdin line 3: invalid character`},
	} {
		in := `{"args": {"n": 21}, "id": "c1"}` + "\n\n" + tc.line + "\n"
		code, _, errs := tg.run(t, in, "enqueue", "-stdin", queue, "cli.echo")
		if code != 1 || !strings.Contains(errs, tc.want) {
			t.Errorf("line %s: exit %d, stderr %q; want 1 and %q", tc.line, code, errs, tc.want)
		}
		h, _ := c.Task(queue + "/c1")
		if _, err := h.Info(ctx); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("line %s: the first line's task was enqueued: %v", tc.line, err)
		}
	}
	for _, args := range [][]string{{"enqueue", "-stdin", queue, "cli.echo", "-id", "x"}, {"enqueue", "-stdin", queue, "cli.echo", "-args", "1"}} {
		if code, _, _ := tg.run(t, `{}`, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if code, _, _ := tg.run(t, "\n\n", "enqueue", "-stdin", queue, "cli.echo"); code != 2 {
		t.Errorf("enqueue -stdin of nothing: exit %d, want 2", code)
	}
}

// healthcheck asks the worker's own /healthz (or /readyz): 0 while it
// answers 200, 1 otherwise, also when nothing listens; never 2 (Docker
// reserves it).
func TestCLIHealthcheck(t *testing.T) {
	e := testenv.IsolatedRedis(t, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var ready atomic.Bool
	srv := &http.Server{Handler: healthMux(e.RDB, &ready), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	addr := ln.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	check := func(want int, envs map[string]string, args ...string) string {
		t.Helper()
		var out, errb syncBuf
		if code := runCLIContext(context.Background(), append([]string{"healthcheck"}, args...), nil, &out, &errb, env(envs)); code != want {
			t.Errorf("healthcheck %v (env %v): exit %d, want %d\n%s", args, envs, code, want, errb.String())
		}
		return errb.String()
	}
	check(0, nil, "-http", addr)
	check(0, map[string]string{"HTTP_ADDR": ":" + port})
	check(0, map[string]string{"HTTP_ADDR": "0.0.0.0:" + port})
	if s := check(1, nil, "-http", addr, "-ready"); !strings.Contains(s, "503") {
		t.Errorf("healthcheck -ready while not ready: %q", s)
	}
	ready.Store(true)
	check(0, nil, "-http", addr, "-ready")
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	check(1, nil, "-http", addr)
	check(1, nil, "-http", freeAddr(t))
	check(1, nil)                            // no address
	check(1, nil, "-http", "nonsense")       // not host:port
	check(1, nil, "-http", addr, "-nothing") // a bad flag
	check(0, nil, "-h")
}

// With TLS_CERT_FILE (or -tls-cert), as the worker serves -http over TLS,
// healthcheck asks over HTTPS (it asked http:// and the container was
// reported unhealthy), trusting that certificate: verified as usual when
// it names the loopback address or localhost, else only the very
// certificate of the file is accepted. Another certificate fails it.
func TestCLIHealthcheckTLS(t *testing.T) {
	e := testenv.IsolatedRedis(t, 0)
	var ready atomic.Bool
	ready.Store(true)
	otherCert, _, _ := selfSigned(t) // the same names, another key
	for _, c := range []struct {
		name string
		dns  []string
		ips  []net.IP
	}{
		{"names 127.0.0.1", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}},
		{"names localhost", []string{"localhost"}, nil},
		{"names neither", []string{"api.example.com"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			certFile, keyFile, _ := selfSignedFor(t, c.dns, c.ips)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			tc, err := loadTLS(certFile, keyFile, addr)
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: healthMux(e.RDB, &ready), ReadHeaderTimeout: time.Second, TLSConfig: tc,
				ErrorLog: log.New(io.Discard, "", 0)}
			go func() { _ = srv.ServeTLS(ln, "", "") }()
			t.Cleanup(func() { _ = srv.Close() })
			_, port, _ := net.SplitHostPort(addr)
			check := func(want int, envs map[string]string, args ...string) string {
				t.Helper()
				var out, errb syncBuf
				if code := runCLIContext(context.Background(), append([]string{"healthcheck"}, args...), nil, &out, &errb, env(envs)); code != want {
					t.Errorf("healthcheck %v (env %v): exit %d, want %d\n%s", args, envs, code, want, errb.String())
				}
				return errb.String()
			}
			check(0, map[string]string{"HTTP_ADDR": ":" + port, "TLS_CERT_FILE": certFile, "TLS_KEY_FILE": keyFile})
			check(0, map[string]string{"HTTP_ADDR": "0.0.0.0:" + port, "TLS_CERT_FILE": certFile})
			check(0, nil, "-http", addr, "-tls-cert", certFile, "-ready")
			// Plain HTTP to the TLS listener is not an answer.
			check(1, map[string]string{"HTTP_ADDR": addr})
			// A server that presents another certificate than the file's.
			if s := check(1, map[string]string{"HTTP_ADDR": addr, "TLS_CERT_FILE": otherCert}); !strings.Contains(s, "certificate") {
				t.Errorf("healthcheck against another certificate: %q", s)
			}
			check(1, map[string]string{"HTTP_ADDR": addr, "TLS_CERT_FILE": filepath.Join(t.TempDir(), "none.pem")})
			check(1, map[string]string{"HTTP_ADDR": addr, "TLS_CERT_FILE": keyFile}) // no certificate in it
		})
	}
}

// queues -watch prints the table again every interval until interrupted:
// with -json one object per line.
func TestCLIQueuesWatch(t *testing.T) {
	tg := cliTarget(t)
	queue := testenv.Queue(t)
	c := testenv.Client(t, tg.Env)
	if _, err := c.Enqueue(context.Background(), Echo{}, &client.EnqueueOpts{Queue: queue}); err != nil {
		t.Fatal(err)
	}
	for _, json := range []bool{true, false} {
		ctx, cancel := context.WithCancel(context.Background())
		lines := make(chan string, 100)
		w := &lineWriter{f: func(l string) { lines <- l }}
		args := []string{"queues", "-watch", "20ms"}
		if json {
			args = append(args, "-json")
		}
		done := make(chan int, 1)
		var errb syncBuf
		go func() { done <- runCLIContext(ctx, args, nil, w, &errb, tg.getenv) }()
		frames := 0
		for frames < 3 {
			select {
			case l := <-lines:
				if json {
					f := jsonOf[queuesFrame](t, l)
					for _, q := range f.Queues {
						if q.Queue == queue && q.Waiting == 1 {
							frames++
						}
					}
				} else if strings.HasPrefix(l, queue+" ") && strings.Fields(l)[1] == "1" {
					frames++
				}
			case code := <-done:
				t.Fatalf("queues -watch ended: %d\n%s", code, errb.String())
			}
		}
		cancel()
		// Keep reading: on a Redis holding many queues a frame is more
		// lines than the channel holds, and a CLI blocked writing one
		// would never see the interrupt.
		for code := -1; code < 0; {
			select {
			case <-lines:
			case code = <-done:
				if code != 0 {
					t.Errorf("queues -watch: exit %d after an interrupt\n%s", code, errb.String())
				}
			}
		}
	}
}

// lineWriter calls f with each line written to it.
type lineWriter struct {
	mu  sync.Mutex
	buf []byte
	f   func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			return len(p), nil
		}
		w.f(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

// The listing and control commands: tasks with paging and -kind, queue
// pause, resume and delete, dead retry-all and purge-all by kind,
// workers, groups.
func TestCLIControl(t *testing.T) {
	tg := cliTarget(t)
	idle, served := testenv.Queue(t), testenv.Queue(t)
	c := testenv.Client(t, tg.Env)
	ctx := context.Background()

	// Paging through an idle queue's waiting tasks.
	var ids []string
	for i := range 3 {
		h, err := c.Enqueue(ctx, Echo{N: i}, &client.EnqueueOpts{Queue: idle})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, h.ID())
	}
	type page struct {
		Tasks []map[string]any `json:"tasks"`
		Next  string           `json:"next"`
	}
	p1 := jsonOf[page](t, tg.cmd(t, 0, "tasks", idle, "-state", "waiting", "-limit", "2", "-json"))
	if len(p1.Tasks) != 2 || p1.Next == "" {
		t.Fatalf("page 1: %+v", p1)
	}
	p2 := jsonOf[page](t, tg.cmd(t, 0, "tasks", idle, "-state", "waiting", "-limit", "2", "-cursor", p1.Next, "-json"))
	var got []string
	for _, x := range append(p1.Tasks, p2.Tasks...) {
		got = append(got, fmt.Sprint(x["id"]))
		if x["kind"] != "cli.echo" || x["state"] != "waiting" {
			t.Errorf("task %v", x)
		}
	}
	if !slices.Equal(got, ids) || p2.Next != "" {
		t.Errorf("pages list %v (next %q), want %v", got, p2.Next, ids)
	}
	if text := tg.cmd(t, 0, "tasks", idle, "-state", "waiting", "-limit", "2"); !strings.Contains(text, "-cursor "+p1.Next) || !strings.Contains(text, ids[0]) {
		t.Errorf("tasks, text:\n%s", text)
	}
	if p := jsonOf[page](t, tg.cmd(t, 0, "tasks", idle, "-state", "waiting", "-kind", "cli.other", "-json")); len(p.Tasks) != 0 {
		t.Errorf("-kind cli.other: %v", p.Tasks)
	}

	// Pause and resume show in queues.
	paused := func(q string) bool {
		for _, r := range jsonOf[[]queueRow](t, tg.cmd(t, 0, "queues", "-json")) {
			if r.Queue == q {
				return r.Paused
			}
		}
		t.Fatalf("queues does not list %s", q)
		return false
	}
	tg.cmd(t, 0, "queue", "pause", idle)
	if !paused(idle) {
		t.Errorf("%s is not paused", idle)
	}
	tg.cmd(t, 0, "queue", "resume", idle)
	if paused(idle) {
		t.Errorf("%s is still paused", idle)
	}

	// Delete refuses a queue with tasks, unless forced.
	if code, _, errs := tg.run(t, "", "queue", "delete", idle); code != 1 || !strings.Contains(errs, "not empty") || !strings.Contains(errs, "-force") {
		t.Errorf("queue delete of a queue with tasks: exit %d, %s", code, errs)
	}
	tg.cmd(t, 0, "queue", "delete", "-force", idle)
	if p := jsonOf[page](t, tg.cmd(t, 0, "tasks", idle, "-state", "waiting", "-json")); len(p.Tasks) != 0 {
		t.Errorf("after delete: %v", p.Tasks)
	}

	// Dead tasks of two kinds; retry-all and purge-all by kind.
	testenv.StartWorker(t, tg.RDB, served, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Echo) (int, error) { return 0, worker.Permanent(errors.New("no")) })
		worker.Handle(w, func(ctx context.Context, a Other) (int, error) { return 0, worker.Permanent(errors.New("no")) })
	}, false)
	for _, a := range []client.Args{Echo{}, Echo{}, Other{}} {
		if _, err := c.Enqueue(ctx, a, &client.EnqueueOpts{Queue: served}); err != nil {
			t.Fatal(err)
		}
	}
	deadOf := func(kind string) int {
		args := []string{"dead", "list", served, "-json"}
		if kind != "" {
			args = append(args, "-kind", kind)
		}
		return len(jsonOf[page](t, tg.cmd(t, 0, args...)).Tasks)
	}
	testenv.Eventually(t, 10*time.Second, "three dead tasks", func() bool { return deadOf("") == 3 })
	if m := jsonOf[map[string]any](t, tg.cmd(t, 0, "dead", "retry-all", served, "-kind", "cli.other", "-json")); m["retried"] != float64(1) {
		t.Errorf("retry-all -kind cli.other: %v", m)
	}
	testenv.Eventually(t, 10*time.Second, "the retried task to die again", func() bool { return deadOf("cli.other") == 1 })
	if m := jsonOf[map[string]any](t, tg.cmd(t, 0, "dead", "purge-all", served, "-kind", "cli.echo", "-json")); m["purged"] != float64(2) {
		t.Errorf("purge-all -kind cli.echo: %v", m)
	}
	if n := deadOf(""); n != 1 {
		t.Errorf("%d dead left, want 1", n)
	}
	tg.cmd(t, 0, "dead", "purge-all", served)
	if n := deadOf(""); n != 0 {
		t.Errorf("%d dead left, want 0", n)
	}

	// The worker serving it, and a group.
	var ws []map[string]any
	testenv.Eventually(t, 10*time.Second, "the worker listed", func() bool {
		ws = jsonOf[[]map[string]any](t, tg.cmd(t, 0, "workers", "-json"))
		for _, w := range ws {
			if qs, _ := w["queues"].(map[string]any); qs[served] != nil {
				return true
			}
		}
		return false
	})
	if out := tg.cmd(t, 0, "workers"); !strings.Contains(out, served+"=1") {
		t.Errorf("workers:\n%s", out)
	}
	g, err := patterns.ForkJoin(ctx, c, []client.Spec{{Args: Echo{}, Opts: &client.EnqueueOpts{Queue: served}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = g.Wait(ctx)
	gs := jsonOf[[]map[string]any](t, tg.cmd(t, 0, "groups", "-queue", served, "-json"))
	if len(gs) != 1 || gs[0]["id"] != g.ID() || gs[0]["failed"] != float64(1) {
		t.Errorf("groups -queue %s: %v", served, gs)
	}
}

// version prints the module and its build.
func TestCLIVersion(t *testing.T) {
	var out, errb syncBuf
	if code := runCLIContext(context.Background(), []string{"version", "-json"}, nil, &out, &errb, env(nil)); code != 0 {
		t.Fatalf("version: exit %d\n%s", code, errb.String())
	}
	v := jsonOf[map[string]any](t, out.String())
	if v["module"] != "github.com/taskfleet/async" || !strings.HasPrefix(fmt.Sprint(v["go"]), "go1.") || v["version"] == "" {
		t.Errorf("version -json: %v", v)
	}
	// A binary built from a checkout (go build stamps the VCS settings).
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/taskfleet/async", Version: "v1.4.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0aaec837e4658dcc"}, {Key: "vcs.time", Value: "2026-12-05T10:30:41Z"}, {Key: "vcs.modified", Value: "true"}}}
	want := version{Module: "github.com/taskfleet/async", Version: "v1.4.0", Revision: "0aaec837e4658dcc", Time: "2026-12-05T10:30:41Z", Modified: true, Go: "go1.26.8"}
	if got := versionOf(bi, true); got != want {
		t.Errorf("versionOf: %+v, want %+v", got, want)
	}
}

// The connection flags make a client of one server, a cluster, or a
// master behind Sentinel, with the URL's credentials; and the CLI runs on
// a cluster client (a miniredis answers CLUSTER SLOTS as one node).
func TestRedisConnection(t *testing.T) {
	conn := func(envs map[string]string) *redisConn {
		return redisFlags(flag.NewFlagSet("test", flag.ContinueOnError), env(envs))
	}
	o, err := conn(map[string]string{"REDIS_URL": "rediss://app:pw@h:1/0", "REDIS_CLUSTER_ADDRS": "a:1, b:2,c:3"}).options()
	if err != nil || !o.IsClusterMode || !slices.Equal(o.Addrs, []string{"a:1", "b:2", "c:3"}) || o.Username != "app" || o.Password != "pw" || o.TLSConfig == nil || !o.ContextTimeoutEnabled {
		t.Errorf("cluster: %+v, %v", o, err)
	}
	if rdb := redis.NewUniversalClient(o); fmt.Sprintf("%T", rdb) != "*redis.ClusterClient" {
		t.Errorf("cluster: a %T", rdb)
	} else {
		_ = rdb.Close()
	}
	o, err = conn(map[string]string{"REDIS_URL": "redis://:pw@h:1/3", "REDIS_SENTINEL_ADDRS": "s1:26379,s2:26379", "REDIS_SENTINEL_MASTER": "mymaster", "REDIS_SENTINEL_PASSWORD": "spw"}).options()
	if err != nil || o.MasterName != "mymaster" || !slices.Equal(o.Addrs, []string{"s1:26379", "s2:26379"}) || o.DB != 3 || o.Password != "pw" || o.SentinelPassword != "spw" {
		t.Errorf("sentinel: %+v, %v", o, err)
	}
	for _, envs := range []map[string]string{
		{"REDIS_CLUSTER_ADDRS": "a:1", "REDIS_SENTINEL_ADDRS": "s:1", "REDIS_SENTINEL_MASTER": "m"},
		{"REDIS_SENTINEL_ADDRS": "s:1"},
		{"REDIS_SENTINEL_MASTER": "m"},
		{"REDIS_URL": "redis://h:1/2", "REDIS_CLUSTER_ADDRS": "a:1"},
		{"REDIS_URL": "http://h:1"},
	} {
		if _, err := conn(envs).options(); err == nil {
			t.Errorf("%v: no error", envs)
		}
	}

	m := miniredis.RunT(t)
	tg := &target{Env: &testenv.Env{Addr: m.Addr()}, env: map[string]string{"REDIS_CLUSTER_ADDRS": m.Addr()}}
	queue := testenv.Queue(t)
	id := tg.cmd(t, 0, "enqueue", queue, "cli.echo", "-args", `{"n": 1}`)
	for _, r := range jsonOf[[]queueRow](t, tg.cmd(t, 0, "queues", "-json")) {
		if r.Queue == queue && r.Waiting == 1 {
			return
		}
	}
	t.Errorf("queues on the cluster client does not show %s waiting", id)
}

// The commands reach a master through Sentinel: a redis-server and a
// Sentinel monitoring it, started for the test; the database comes from
// REDIS_URL.
func TestCLISentinel(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if testenv.Real() {
			t.Fatal("redis-server is not on PATH")
		}
		t.Skip("needs redis-server on PATH")
	}
	start := func(args ...string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	master := freeAddr(t)
	host, port, _ := net.SplitHostPort(master)
	start("--port", port, "--bind", host, "--save", "", "--appendonly", "no")
	sentinel := freeAddr(t)
	_, sport, _ := net.SplitHostPort(sentinel)
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	if err := os.WriteFile(conf, []byte("port "+sport+"\nbind "+host+"\nsentinel monitor cli "+host+" "+port+" 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start(conf, "--sentinel")
	srdb := redis.NewSentinelClient(&redis.Options{Addr: sentinel})
	defer srdb.Close()
	testenv.Eventually(t, 10*time.Second, "the Sentinel to know the master", func() bool {
		a, err := srdb.GetMasterAddrByName(context.Background(), "cli").Result()
		return err == nil && len(a) == 2 && a[1] == port
	})
	tg := &target{env: map[string]string{"REDIS_SENTINEL_ADDRS": sentinel, "REDIS_SENTINEL_MASTER": "cli", "REDIS_URL": "redis://ignored:1/4"}}
	queue := testenv.Queue(t)
	id := tg.cmd(t, 0, "enqueue", queue, "cli.echo", "-args", `{"n": 1}`)
	rdb := redis.NewClient(&redis.Options{Addr: master, DB: 4})
	defer rdb.Close()
	if q, err := inspect.New(rdb).Queue(context.Background(), queue); err != nil || q.Waiting != 1 {
		t.Errorf("the master's database 4 has %d task(s) waiting in %s (%v), want 1 (%s)", q.Waiting, queue, err, id)
	}
	if out := tg.cmd(t, 0, "queues"); !strings.Contains(out, queue) {
		t.Errorf("queues through Sentinel:\n%s", out)
	}
}
