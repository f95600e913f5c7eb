package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/s3fake"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/ratelimit"
	"github.com/taskfleet/async/upload"
	"github.com/taskfleet/async/worker"
)

// The examples of README "Uploading to S3", as they are written there:
// each block that follows a line "<!-- upload-example: NAME -->". The
// worker's environment and flags (env) are parsed by the command's own
// configuration; the enqueue command (enqueue) runs against Redis and a
// worker decodes its task; the Go block (go) is in this file word for word,
// compiled, and run against the in-process S3 server.

const readmeUploadSection = "## Uploading to S3"

// readmeUploadDB is the database of a real server this test owns (flushed
// first): the examples use the queue "uploads".
const readmeUploadDB = 3

// uploadExamples returns the section's marked blocks, by name.
func uploadExamples(t *testing.T) map[string]string {
	t.Helper()
	fh, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	marker := regexp.MustCompile(`^<!-- upload-example: ([a-z]+) -->$`)
	out := map[string]string{}
	in, want, cur := false, "", ""
	var code strings.Builder
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == readmeUploadSection:
			in = true
		case in && strings.HasPrefix(line, "## "):
			in = false
		case !in:
		case cur == "" && want == "" && marker.MatchString(line):
			want = marker.FindStringSubmatch(line)[1]
		case cur == "" && want != "":
			if !strings.HasPrefix(line, "```") || len(line) == 3 {
				t.Fatalf("README: the marker of %q is not followed by a code fence with a language, but by %q", want, line)
			}
			cur, want = "\x00"+want, ""
			code.Reset()
		case cur != "" && line == "```":
			out[cur[1:]] = code.String()
			cur = ""
		case cur != "":
			code.WriteString(line)
			code.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"env", "enqueue", "go"} {
		if out[name] == "" {
			t.Fatalf("README %q has no block marked <!-- upload-example: %s -->", readmeUploadSection, name)
		}
	}
	return out
}

// shellWords splits a one-command sh block: lines joined at their
// trailing backslash, words split at blanks, '...' quoting kept together.
func shellWords(t *testing.T, block string) []string {
	t.Helper()
	s := strings.ReplaceAll(block, "\\\n", " ")
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for _, r := range s {
		switch {
		case quoted && r == '\'':
			quoted = false
		case quoted:
			w.WriteRune(r)
		case r == '\'':
			quoted, inWord = true, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("README block: unterminated quote in %q", block)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

func TestReadmeUploadExamples(t *testing.T) {
	ex := uploadExamples(t)

	t.Run("env", func(t *testing.T) {
		// VAR=value ... bin/worker flags...
		vars := map[string]string{}
		words := shellWords(t, ex["env"])
		i := 0
		for ; i < len(words) && words[i] != "bin/worker"; i++ {
			k, v, ok := strings.Cut(words[i], "=")
			if !ok {
				t.Fatalf("README env block: %q is neither VAR=value nor bin/worker", words[i])
			}
			vars[k] = v
		}
		if i == len(words) {
			t.Fatal("README env block runs no bin/worker")
		}
		c, err := parseConfig(words[i+1:], env(vars), io.Discard)
		if err != nil {
			t.Fatalf("README env block: %v", err)
		}
		u := c.upload.cfg
		if u.S3.Endpoint != "s3.eu-west-1.amazonaws.com" || u.S3.Insecure || u.S3.Region != "eu-west-1" || u.PartSize != 64<<20 ||
			u.PartConcurrency != 8 || u.RequestRate != (ratelimit.Limit{Rate: 3500, Per: time.Second, Burst: 350}) ||
			u.Bandwidth.BytesPerSecond != 200_000_000 || c.lease != time.Minute || !c.roles.worker || c.roles.coordinator ||
			c.queues["uploads"] != 1 || !reflect.DeepEqual(c.uploadRoots, []string{"/data"}) {
			t.Fatalf("README env block configures %+v (lease %v, roles %+v, queues %v, roots %v)", u, c.lease, c.roles, c.queues, c.uploadRoots)
		}
		// The credentials are variables the S3 client reads itself:
		// nothing in the process' configuration holds them.
		if vars["AWS_ACCESS_KEY_ID"] == "" || vars["AWS_SECRET_ACCESS_KEY"] == "" || u.S3.AccessKey != "" || u.S3.SecretKey != "" {
			t.Fatalf("README env block: credentials %q/%q in the environment, %q/%q in the configuration", vars["AWS_ACCESS_KEY_ID"], vars["AWS_SECRET_ACCESS_KEY"], u.S3.AccessKey, u.S3.SecretKey)
		}
	})

	e := testenv.IsolatedRedis(t, readmeUploadDB)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("enqueue", func(t *testing.T) {
		words := shellWords(t, ex["enqueue"])
		if len(words) < 2 || words[0] != "bin/worker" || words[1] != "enqueue" {
			t.Fatalf("README enqueue block: %q", words)
		}
		url := "redis://" + e.Addr
		if e.DB != 0 {
			url += fmt.Sprintf("/%d", e.DB)
		}
		var out, errs bytes.Buffer
		if code := runCLIContext(ctx, words[1:], nil, &out, &errs, env(map[string]string{"REDIS_URL": url})); code != 0 {
			t.Fatalf("README enqueue block: exit %d: %s%s", code, out.String(), errs.String())
		}
		got := make(chan upload.Args, 1)
		testenv.StartWorker(t, e.RDB, "uploads", nil, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, a upload.Args) (upload.Result, error) {
				got <- a
				return upload.Result{Dest: a.Dest}, nil
			})
		}, true)
		want := upload.Args{Src: "/data/cam/north.mp4", Dest: "s3://media/cam/north.mp4", ContentType: "video/mp4", Metadata: map[string]string{"camera": "north"}}
		select {
		case a := <-got:
			if !reflect.DeepEqual(a, want) {
				t.Fatalf("the handler got %+v, want %+v", a, want)
			}
		case <-ctx.Done():
			t.Fatal("the README's task did not reach the handler")
		}
	})

	t.Run("go", func(t *testing.T) {
		src, err := os.ReadFile("upload_readme_test.go")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(src, []byte(ex["go"])) {
			t.Fatalf("README go block is not in upload_readme_test.go as written:\n%s", ex["go"])
		}
		s3, err := s3fake.New(s3fake.Options{Buckets: []string{"media"}})
		if err != nil {
			t.Fatal(err)
		}
		defer s3.Close()
		root := t.TempDir()
		data := bytes.Repeat([]byte("0123456789abcdef"), (18<<20)/16) // 18 MiB: three parts of 8 MiB
		p := filepath.Join(root, "north.mp4")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		sctx, stop := context.WithCancel(ctx)
		defer stop()
		var h *upload.Handler
		testenv.StartWorker(t, e.RDB, "uploads", nil, func(w *worker.Worker) {
			var err error
			h, err = registerUploads(sctx, w, e.RDB, []string{root}, upload.S3Config{Endpoint: s3.Endpoint(), Insecure: true, PathStyle: true,
				AccessKey: s3.AccessKey(), SecretKey: s3.SecretKey()})
			if err != nil {
				t.Fatal(err)
			}
		}, true)
		defer h.Close()
		defer stop() // the sweeper ends before the handler closes
		c := testenv.Client(t, e)
		var out bytes.Buffer
		res, err := uploadFile(ctx, c, p, "s3://media/cam/north.mp4", &out)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if res.SHA256 != hex.EncodeToString(sum[:]) || res.Parts != 3 || !strings.Contains(out.String(), "s3://media/cam/north.mp4: 18874368 bytes in 3 parts") {
			t.Fatalf("result %+v; printed:\n%s", res, out.String())
		}
		stored, meta, err := s3.Object("media", "cam/north.mp4")
		if err != nil || !bytes.Equal(stored, data) || meta["Origin"] != "readme" && meta["origin"] != "readme" {
			t.Fatalf("stored %d bytes (%v), metadata %v", len(stored), err, meta)
		}
	})
}

// registerUploads registers the upload handler on w, for files under roots
// and the S3-compatible store of s3 (credentials from the environment when
// s3 has none), and runs its sweeper until ctx ends.
func registerUploads(ctx context.Context, w *worker.Worker, rdb redis.UniversalClient, roots []string, s3 upload.S3Config) (*upload.Handler, error) {
	h, err := upload.New(upload.Config{
		Roots:           roots,
		Redis:           rdb, // resume records, progress, the fleet-wide limits
		S3:              s3,
		PartSize:        8 << 20,
		PartConcurrency: 4,
		RequestRate:     ratelimit.Limit{Rate: 3500, Per: time.Second, Burst: 350},
		Bandwidth:       ratelimit.Bandwidth{BytesPerSecond: 200_000_000},
	})
	if err != nil {
		return nil, err
	}
	worker.Handle(w, h.Run)
	go func() { _ = h.RunSweeper(ctx, time.Minute, "uploads") }()
	return h, nil
}

// uploadFile uploads src to dest through the fleet, printing its progress
// every half second, and returns the result.
func uploadFile(ctx context.Context, c *client.Client, src, dest string, out io.Writer) (upload.Result, error) {
	h, err := c.Enqueue(ctx, upload.Args{Src: src, Dest: dest, Metadata: map[string]string{"origin": "readme"}},
		&client.EnqueueOpts{Queue: "uploads", MaxAttempts: 10})
	if err != nil {
		return upload.Result{}, err
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := h.State(ctx)
		if err != nil {
			return upload.Result{}, err
		}
		if st.Final() {
			break
		}
		if p, err := h.Progress(ctx); err == nil && p.Reported() {
			fmt.Fprintf(out, "%s: %d of %d bytes\n", dest, p.Done, p.Total)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return upload.Result{}, ctx.Err()
		}
	}
	res, err := client.Result[upload.Result](ctx, h)
	if err != nil {
		return upload.Result{}, err
	}
	fmt.Fprintf(out, "%s: %d bytes in %d parts, SHA-256 %s, CRC32C %s, verified %s\n", res.Dest, res.Bytes, res.Parts, res.SHA256, res.CRC32C, res.Verified)
	return res, nil
}
