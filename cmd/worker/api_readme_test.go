package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/httpapi"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/upload"
	"github.com/taskfleet/async/worker"
)

// The examples of README "Enqueue from any service (HTTP API)", run as they
// are written there: each code block that follows a line
// "<!-- api-example: NAME -->" runs with its interpreter (sh, python3,
// node) against a real API server with a token, and a Go worker runs the
// tasks they enqueue. It is the issue's "a task enqueued with curl is run by
// a Go handler and its outcome read back over HTTP", for Python and Node
// too.

const readmeAPISection = "## Enqueue from any service (HTTP API)"

// readmeAPIDB is the database of a real server these tests own (flushed
// first): the examples use the queue "uploads", which no other package's
// tests may serve meanwhile.
const readmeAPIDB = 1

// readmeExample is one marked block of the section: its marker's name and
// its fence's language.
type readmeExample struct {
	name, lang, code string
}

// readmeExamples returns the blocks of file's section heading that follow
// an "<!-- api-example: NAME -->" line.
func readmeExamples(t *testing.T, file, heading string) map[string]readmeExample {
	t.Helper()
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	marker := regexp.MustCompile(`^<!-- api-example: ([a-z]+) -->$`)
	out := map[string]readmeExample{}
	var cur *readmeExample
	var code strings.Builder
	in, want := false, ""
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == heading:
			in = true
		case in && strings.HasPrefix(line, "## "):
			in = false
		case !in:
		case cur == nil && want == "" && marker.MatchString(line):
			want = marker.FindStringSubmatch(line)[1]
		case cur == nil && want != "":
			if !strings.HasPrefix(line, "```") || len(line) == 3 {
				t.Fatalf("%s: the marker of %q is not followed by a code fence with a language, but by %q", file, want, line)
			}
			cur = &readmeExample{name: want, lang: line[3:]}
			code.Reset()
			want = ""
		case cur != nil && line == "```":
			cur.code = code.String()
			if _, dup := out[cur.name]; dup {
				t.Fatalf("%s: two examples named %q", file, cur.name)
			}
			out[cur.name] = *cur
			cur = nil
		case cur != nil:
			code.WriteString(line)
			code.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// interpreter returns the path of the program that runs an example in
// lang; a missing one fails t (the examples are the promise to other
// languages: CI installs them, .ci/run).
func interpreter(t *testing.T, lang string) []string {
	t.Helper()
	var cmd []string
	switch lang {
	case "sh":
		cmd = []string{"sh"}
		if _, err := exec.LookPath("curl"); err != nil {
			t.Fatalf("curl is not in PATH: the README's curl examples need it (.ci/run installs it with apt-get)")
		}
	case "python":
		cmd = []string{"python3"}
	case "js":
		cmd = []string{"node"}
	default:
		t.Fatalf("no interpreter for a README block in %q", lang)
	}
	path, err := exec.LookPath(cmd[0])
	if err != nil {
		t.Fatalf("%s is not in PATH: the README's %s example needs it (.ci/run installs it with apt-get)", cmd[0], lang)
	}
	cmd[0] = path
	if lang == "js" {
		out, err := exec.Command(path, "--version").Output()
		if err != nil {
			t.Fatalf("node --version: %v", err)
		}
		v := strings.TrimSpace(string(out))
		major, _ := strconv.Atoi(strings.SplitN(strings.TrimPrefix(v, "v"), ".", 2)[0])
		if major < 18 {
			t.Fatalf("node %s: the README's example needs node 18 or later (the built-in fetch)", v)
		}
	}
	return cmd
}

// readmeUploads records the tasks the example's handler ran.
type readmeUploads struct {
	mu   sync.Mutex
	seen map[string]upload.Args // by task id
	runs map[string]int
}

// readmeResult is what the handler returns for args: something of each
// field, so that the printed result shows the handler saw the args.
func readmeResult(a upload.Args) upload.Result {
	sum := sha256.Sum256([]byte(a.Src))
	return upload.Result{Bytes: int64(len(a.Src) * 1000), SHA256: hex.EncodeToString(sum[:]), Dest: a.Dest}
}

func TestReadmeAPIExamples(t *testing.T) {
	examples := readmeExamples(t, "../../README.md", readmeAPISection)
	want := map[string]string{"curl": "sh", "python": "python", "node": "js", "batch": "sh"}
	for name, lang := range want {
		ex, ok := examples[name]
		if !ok {
			t.Fatalf("README %q has no block marked <!-- api-example: %s -->", readmeAPISection, name)
		}
		if ex.lang != lang {
			t.Fatalf("README example %s is a %q block, want %q", name, ex.lang, lang)
		}
	}
	if len(examples) != len(want) {
		t.Fatalf("README %q has examples %v; this test knows %v", readmeAPISection, examples, want)
	}
	// Missing interpreters fail the test before anything runs.
	cmds := map[string][]string{}
	for name, ex := range examples {
		cmds[name] = interpreter(t, ex.lang)
	}

	e := testenv.IsolatedRedis(t, readmeAPIDB)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	got := &readmeUploads{seen: map[string]upload.Args{}, runs: map[string]int{}}
	testenv.StartWorker(t, e.RDB, "uploads", nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a upload.Args) (upload.Result, error) {
			task, _ := worker.TaskFromContext(ctx)
			id := task.ID
			got.mu.Lock()
			got.seen[id] = a
			got.runs[id]++
			got.mu.Unlock()
			return readmeResult(a), nil
		})
	}, false)
	c, err := client.New(ctx, e.RDB, &client.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const secret = "readme-7c1d0a93e4f2b6"
	h, err := httpapi.New(httpapi.Config{Client: c, Inspector: inspect.New(e.RDB), Logger: slog.New(slog.DiscardHandler),
		Tokens: []httpapi.Token{{Name: "readme", Secret: secret, Queues: []string{"uploads"}}}})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", h)
	srv := httptest.NewServer(mux) // 127.0.0.1
	defer srv.Close()

	run := func(t *testing.T, name string) string {
		t.Helper()
		ex := examples[name]
		ext := map[string]string{"sh": ".sh", "python": ".py", "js": ".mjs"}[ex.lang]
		file := filepath.Join(t.TempDir(), name+ext)
		if err := os.WriteFile(file, []byte(ex.code), 0o644); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(rctx, cmds[name][0], file)
		cmd.Env = exampleEnv(srv.URL, secret)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("README example %s: %v\nstdout:\n%s\nstderr:\n%s", name, err, out, stderr.String())
		}
		t.Logf("README example %s printed:\n%s", name, out)
		return string(out)
	}
	// The handler saw the args as the example wrote them, and the example
	// printed the handler's result (its last line: the outcome's result, or
	// the whole outcome for curl).
	check := func(t *testing.T, out, file string, outcome bool) {
		t.Helper()
		id := "uploads/" + file
		wantArgs := upload.Args{Src: "/data/" + file, Dest: "/data/out/" + file}
		got.mu.Lock()
		a, ok := got.seen[id]
		got.mu.Unlock()
		if !ok || !reflect.DeepEqual(a, wantArgs) {
			t.Fatalf("the Go handler ran %s with %+v (ran: %v), want %+v", id, a, ok, wantArgs)
		}
		if out == "" {
			return
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		last := lines[len(lines)-1]
		var res upload.Result
		if outcome {
			var o struct {
				ID     string          `json:"id"`
				State  string          `json:"state"`
				Ended  bool            `json:"ended"`
				Result json.RawMessage `json:"result"`
			}
			if err := json.Unmarshal([]byte(last), &o); err != nil {
				t.Fatalf("the example's last line is not the outcome: %v\n%s", err, out)
			}
			if o.ID != id || o.State != "succeeded" || !o.Ended {
				t.Fatalf("outcome of %s: %s, ended %v; want %s succeeded and ended\n%s", o.ID, o.State, o.Ended, id, out)
			}
			last = string(o.Result)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(last), &m); err != nil {
			t.Fatalf("the example did not print the result as JSON: %v\n%s", err, out)
		}
		want := readmeResult(wantArgs)
		res.Dest, _ = m["dest"].(string)
		res.SHA256, _ = m["sha256"].(string)
		if b, ok := m["bytes"].(float64); ok {
			res.Bytes = int64(b)
		}
		if res != want || len(m) != 3 {
			t.Fatalf("the example printed the result %s, want %+v (bytes, sha256, dest)", last, want)
		}
	}

	t.Run("curl", func(t *testing.T) {
		check(t, run(t, "curl"), "a.png", true)
		got.mu.Lock()
		before := got.runs["uploads/a.png"]
		got.mu.Unlock()
		// Run again, as a retry would: the id is there, so the enqueue
		// answers duplicate, the task does not run again, and the outcome
		// is the same.
		out := run(t, "curl")
		check(t, out, "a.png", true)
		var first struct {
			Duplicate bool `json:"duplicate"`
		}
		if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &first); err != nil || !first.Duplicate {
			t.Errorf("the second enqueue of uploads/a.png did not answer duplicate (%v):\n%s", err, out)
		}
		got.mu.Lock()
		defer got.mu.Unlock()
		if n := got.runs["uploads/a.png"]; n != before {
			t.Errorf("uploads/a.png ran %d times after the second enqueue, %d before: the duplicate ran", n, before)
		}
	})
	t.Run("python", func(t *testing.T) { check(t, run(t, "python"), "b.png", false) })
	t.Run("node", func(t *testing.T) { check(t, run(t, "node"), "c.png", false) })
	t.Run("batch", func(t *testing.T) {
		out := run(t, "batch")
		var resp struct {
			Tasks []struct {
				ID        string `json:"id"`
				Duplicate bool   `json:"duplicate"`
			} `json:"tasks"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &resp); err != nil {
			t.Fatalf("the batch example did not print the response: %v\n%s", err, out)
		}
		if len(resp.Tasks) != 2 || resp.Tasks[0].ID != "uploads/d.png" || resp.Tasks[1].ID != "uploads/e.png" || resp.Tasks[0].Duplicate || resp.Tasks[1].Duplicate {
			t.Fatalf("batch response %+v, want uploads/d.png and uploads/e.png, new", resp)
		}
		// The batch's tasks run too: their outcomes, read as the library
		// reads them.
		for _, f := range []string{"d.png", "e.png"} {
			th, err := c.Task("uploads/" + f)
			if err != nil {
				t.Fatal(err)
			}
			r, err := client.Result[upload.Result](ctx, th)
			if err != nil || r != readmeResult(upload.Args{Src: "/data/" + f, Dest: "/data/out/" + f}) {
				t.Fatalf("uploads/%s: %+v, %v", f, r, err)
			}
			check(t, "", f, false)
		}
	})
}

// exampleEnv is the environment an example runs in: the API's address and
// token in the variables the README's examples read, and no proxy (the
// server is on the loopback interface).
func exampleEnv(base, token string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(k) {
		case "http_proxy", "https_proxy", "all_proxy", "no_proxy", "async_api", "async_api_token":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "ASYNC_API="+base, "ASYNC_API_TOKEN="+token, "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
}
