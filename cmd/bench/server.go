package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// server is a redis-server the bench started and must stop.
type server struct {
	addr string
	dir  string
	cmd  *exec.Cmd

	once sync.Once
	done chan struct{} // closed when the process was reaped
}

// freePort finds a free loopback port by listening on 127.0.0.1:0 and closing.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// startServer starts redis-server on a free loopback port, with no
// persistence, in a fresh temporary directory.
func startServer() (*server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found (install it or pass --redis ADDR): %w", err)
	}
	var lastErr error
	for try := 0; try < 3; try++ {
		s, err := startServerOnce(bin)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func startServerOnce(bin string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("find a free port: %w", err)
	}
	dir, err := os.MkdirTemp("", "async-bench-redis-")
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(bin,
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--daemonize", "no",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a Ctrl-C on the terminal reaches the
	// bench only; the bench then stops the server by pid.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	s := &server{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(s.done)
	}()
	rdb := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case <-s.done:
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("redis-server on port %d exited at start: %s", port, lastLines(string(log), 5))
		default:
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("redis-server on port %d did not answer PING: %w", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the server by its pid (SIGTERM, then SIGKILL after 5 s) and
// removes its directory. It is safe to call more than once and concurrently.
func (s *server) stop() {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		_ = os.RemoveAll(s.dir)
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// baseline is one redis-benchmark run.
type baseline struct {
	Label      string
	Command    string // as run, for the doc
	RPS        float64
	RedisCPUus float64 // Redis CPU µs per request
	Other      float64 // cores other processes (redis-benchmark included) kept busy
	Err        string
}

var rpsRe = regexp.MustCompile(`([0-9]+(?:\.[0-9]+)?) requests per second`)

// runBaseline runs redis-benchmark with an XADD to a key of its own, then
// deletes that key.
func runBaseline(ctx context.Context, rdb *redis.Client, addr string, n, clients, pipeline int, label string) baseline {
	key := "async-bench:baseline:" + randHex(4)
	return runBaselineCmd(ctx, rdb, addr, n, clients, pipeline, label, []string{"XADD", key, "*", "f", "v"}, "XADD <key> '*' f v", key)
}

// runBaselineCmd runs redis-benchmark with cmd (shown as shown in the doc),
// then deletes key.
func runBaselineCmd(ctx context.Context, rdb *redis.Client, addr string, n, clients, pipeline int, label string, cmd []string, shownCmd, key string) baseline {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return baseline{Label: label, Err: err.Error()}
	}
	args := []string{"-h", host, "-p", port, "-n", strconv.Itoa(n), "-c", strconv.Itoa(clients)}
	if pipeline > 1 {
		args = append(args, "-P", strconv.Itoa(pipeline))
	}
	args = append(append(args, "-q"), cmd...)
	shown := "redis-benchmark -h " + host + " -p PORT -n " + strconv.Itoa(n) + " -c " + strconv.Itoa(clients)
	if pipeline > 1 {
		shown += " -P " + strconv.Itoa(pipeline)
	}
	shown += " -q " + shownCmd
	b := baseline{Label: label, Command: shown}
	bin, err := exec.LookPath("redis-benchmark")
	if err != nil {
		b.Err = "redis-benchmark not found"
		return b
	}
	before, err := takeSnap(ctx, rdb)
	if err != nil {
		b.Err = err.Error()
		return b
	}
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	after, serr := takeSnap(ctx, rdb)
	_ = rdb.Del(ctx, key).Err()
	if err != nil {
		b.Err = fmt.Sprintf("%v: %s", err, lastLines(string(out), 3))
		return b
	}
	m := rpsRe.FindAllStringSubmatch(string(out), -1)
	if len(m) == 0 {
		b.Err = "no requests/s in output: " + lastLines(string(out), 3)
		return b
	}
	b.RPS, _ = strconv.ParseFloat(m[len(m)-1][1], 64)
	if serr == nil {
		b.RedisCPUus = (after.redisCPU - before.redisCPU) * 1e6 / float64(n)
		b.Other = otherCores(before, after)
	}
	return b
}

// redisInfo returns one field of INFO server.
func redisInfoField(ctx context.Context, rdb *redis.Client, section, field string) string {
	info, err := rdb.Info(ctx, section).Result()
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
