// Command uploads is the producer of the upload use case: it writes N files
// into a directory, uploads them through the fleet (a ForkJoin of upload
// tasks, handled by cmd/worker) into another directory or to an HTTP URL,
// waits for the group and prints what was sent. docker-compose.yml runs it
// as its one-shot producer.
//
//	uploads -redis redis://127.0.0.1:6379/0 -n 100 -src /data/in -dest /data/out
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/upload"
)

func main() {
	env := func(k, def string) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return def
	}
	redisURL := flag.String("redis", env("REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL (env REDIS_URL)")
	queue := flag.String("queue", env("QUEUE", "default"), "queue the uploads go to (env QUEUE)")
	n := flag.Int("n", 100, "files to generate and upload")
	src := flag.String("src", env("SRC_DIR", "/data/in"), "directory to generate the files in (env SRC_DIR)")
	dest := flag.String("dest", env("DEST", "/data/out"), "directory, or http(s) URL prefix, to upload to (env DEST)")
	timeout := flag.Duration("timeout", 10*time.Minute, "how long to wait for the uploads")
	flag.Parse()
	if err := run(*redisURL, *queue, *n, *src, *dest, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "uploads:", err)
		os.Exit(1)
	}
}

func run(redisURL, queue string, n int, src, dest string, timeout time.Duration) error {
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		return err
	}
	opts.ContextTimeoutEnabled = true // deadlines bound socket reads
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	specs := make([]client.Spec, n)
	for i := range specs {
		name := fmt.Sprintf("file-%05d.txt", i)
		p := filepath.Join(src, name)
		if err := os.WriteFile(p, []byte(strings.Repeat(name+"\n", 1+i%50)), 0o644); err != nil {
			return err
		}
		to := filepath.Join(dest, name)
		if strings.HasPrefix(dest, "http://") || strings.HasPrefix(dest, "https://") {
			to = strings.TrimSuffix(dest, "/") + "/" + name
		}
		specs[i] = client.Spec{Args: upload.Args{Src: p, Dest: to}, Opts: &client.EnqueueOpts{Queue: queue}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	g, err := patterns.ForkJoin(ctx, c, specs, nil, nil)
	if err != nil {
		return err
	}
	fmt.Printf("enqueued %d uploads as %s\n", n, g.ID())
	res, err := patterns.Results[upload.Result](ctx, g)
	if err != nil {
		return err
	}
	var bytes int64
	for _, r := range res {
		bytes += r.Bytes
	}
	fmt.Printf("uploaded %d files, %d bytes, in %v\n", len(res), bytes, time.Since(start).Round(time.Millisecond))
	return nil
}
