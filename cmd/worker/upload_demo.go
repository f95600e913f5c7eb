package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/s3fake"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/upload"
)

// demoBucket is the bucket of the demo's embedded S3 server.
const demoBucket = "demo"

// demoPartSize is the demo's part size: S3's smallest, so that files of a
// few MiB show multipart uploads.
const demoPartSize = 5 << 20

// demoS3 is the demo's S3 part: an S3-compatible server in the process, and
// the queue its uploads go through.
type demoS3 struct {
	srv   *s3fake.Server
	queue string
	files map[string]string // object key → SHA-256 (hex) of the source
}

// startDemoS3 starts the embedded S3 server (internal/s3fake: gofakes3 in
// memory, over real HTTP on loopback).
func startDemoS3(queue string) (*demoS3, error) {
	srv, err := s3fake.New(s3fake.Options{Buckets: []string{demoBucket}})
	if err != nil {
		return nil, err
	}
	return &demoS3{srv: srv, queue: queue, files: map[string]string{}}, nil
}

// config is the upload handler's configuration for the embedded server:
// what a deployment sets with -s3-endpoint, -s3-path-style and the
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY variables.
func (d *demoS3) config() upload.S3Config {
	return upload.S3Config{Endpoint: d.srv.Endpoint(), Insecure: true, PathStyle: true, Checksums: true,
		AccessKey: d.srv.AccessKey(), SecretKey: d.srv.SecretKey()}
}

// writeFiles writes small files (1 to 64 KiB) and large ones (multipart:
// 6 MiB and up, two parts or more) under dir and returns their upload specs, and the bytes
// in all.
func (d *demoS3) writeFiles(dir string, small, large int) ([]client.Spec, int64, error) {
	in := filepath.Join(dir, "S3", "in")
	if err := os.MkdirAll(in, 0o755); err != nil {
		return nil, 0, err
	}
	r := rand.New(rand.NewPCG(19, 5))
	noise := rand.NewChaCha8([32]byte{'d', 'e', 'm', 'o'})
	var specs []client.Spec
	var total int64
	add := func(name string, size int) error {
		p := filepath.Join(in, name)
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		h := sha256.New()
		w := io.MultiWriter(f, h)
		buf := make([]byte, 64<<10)
		for left := size; left > 0; left -= len(buf) {
			_, _ = noise.Read(buf)
			if _, err := w.Write(buf[:min(left, len(buf))]); err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Close(); err != nil {
			return err
		}
		d.files[name] = hex.EncodeToString(h.Sum(nil))
		total += int64(size)
		specs = append(specs, client.Spec{
			Args: upload.Args{Src: p, Dest: "s3://" + demoBucket + "/" + name, Metadata: map[string]string{"source": "worker-demo"}},
			Opts: &client.EnqueueOpts{Queue: d.queue},
		})
		return nil
	}
	for i := 0; i < large; i++ {
		if err := add(fmt.Sprintf("large-%02d.bin", i), demoPartSize+(1+i)<<20); err != nil {
			return nil, 0, err
		}
	}
	for i := 0; i < small; i++ {
		if err := add(fmt.Sprintf("small-%04d.bin", i), 1<<10+r.IntN(63<<10)); err != nil {
			return nil, 0, err
		}
	}
	return specs, total, nil
}

// run uploads the files as one group (ForkJoin), prints the group's
// progress in bytes while it runs, then checks every object: the result's
// SHA-256 against the source's, and the copy the server holds.
func (d *demoS3) run(ctx context.Context, cl *client.Client, dir string, small, large int, out io.Writer) error {
	specs, total, err := d.writeFiles(dir, small, large)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nUploading to S3: %d files (%d of them multipart, in parts of %s), %s, into s3://%s on the embedded S3-compatible server at %s\n",
		len(specs), large, fmtBytes(demoPartSize), fmtBytes(total), demoBucket, d.srv.URL())
	start := time.Now()
	g, err := patterns.ForkJoin(ctx, cl, specs, nil, nil)
	if err != nil {
		return fmt.Errorf("demo: S3: %w", err)
	}
	fmt.Fprintf(out, "  group %s, its progress every 250ms (a line when it changed):\n", g.ID())
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := ""
	var pr patterns.Progress
	for {
		if pr, err = g.Progress(ctx); err != nil {
			return err
		}
		line := fmt.Sprintf("  S3 %6.2fs: %d/%d uploads done, %s", time.Since(start).Seconds(), pr.Done(), pr.Total, workLine(pr))
		if key := line[strings.Index(line, "s:"):]; key != last {
			fmt.Fprintln(out, line)
			last = key
		}
		if pr.Ended() {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	took := time.Since(start)
	members, err := g.Members(ctx)
	if err != nil {
		return err
	}
	var failed []error
	parts, multipart, resumed := 0, 0, int64(0)
	verified := map[string]int{}
	for _, h := range members {
		res, err := client.Result[upload.Result](ctx, h)
		if err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", h.ID(), err))
			continue
		}
		key := filepath.Base(res.Dest)
		data, _, err := d.srv.Object(demoBucket, key)
		if err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", res.Dest, err))
			continue
		}
		stored := sha256.Sum256(data)
		if want := d.files[key]; res.SHA256 != want || hex.EncodeToString(stored[:]) != want {
			failed = append(failed, fmt.Errorf("%s: SHA-256 of the source %s, of the result %s, of the stored object %x", res.Dest, want, res.SHA256, stored))
			continue
		}
		if res.Parts > 0 {
			multipart++
			parts += res.Parts
		}
		resumed += res.Resumed
		verified[res.Verified]++
	}
	if len(failed) > 0 {
		return fmt.Errorf("demo: S3: %d of %d uploads failed: %w", len(failed), len(members), errors.Join(failed...))
	}
	st := d.srv.Stats()
	fmt.Fprintf(out, "S3: %d objects, %s in %v (%s/s): %d single PUTs, %d multipart in %d parts; the server received %d requests\n",
		len(members), fmtBytes(total), took.Round(time.Millisecond), fmtBytes(int64(float64(total)/took.Seconds())), st.PutObjects, multipart, parts, st.Requests)
	var checks []string
	for v, n := range verified {
		checks = append(checks, fmt.Sprintf("%d with %s", n, v))
	}
	sort.Strings(checks)
	fmt.Fprintf(out, "S3: checksums verified: every object's SHA-256 in its result and in the server's copy is its source's; the handler checked after each upload: %s\n", strings.Join(checks, ", "))
	return nil
}

// workLine is a group's progress in bytes.
func workLine(pr patterns.Progress) string {
	if pr.WorkTotal == 0 {
		return "no bytes reported yet"
	}
	return fmt.Sprintf("%s of %s reported (%.0f%%)", fmtBytes(pr.WorkDone), fmtBytes(pr.WorkTotal), 100*float64(pr.WorkDone)/float64(pr.WorkTotal))
}
