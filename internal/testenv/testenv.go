// Package testenv is the shared test harness: one suite runs on miniredis by
// default and on a real Redis when ASYNC_REDIS_ADDR is set.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// EnvAddr names the environment variable holding a real Redis address.
const EnvAddr = "ASYNC_REDIS_ADDR"

// EnvCluster names the environment variable holding the comma-separated
// addresses of a real Redis Cluster; when set, the suite runs on it.
const EnvCluster = "ASYNC_REDIS_CLUSTER"

// Real reports whether the suite runs against a real Redis.
func Real() bool { return os.Getenv(EnvAddr) != "" || os.Getenv(EnvCluster) != "" }

// NewClient returns a client of the Redis at addr, or of the cluster named by
// ASYNC_REDIS_CLUSTER when that is set (addr is then ignored).
func NewClient(addr string) redis.UniversalClient { return NewNamedClient(addr, "") }

// NewNamedClient is NewClient whose connections carry the client name name
// (CLIENT LIST shows it), so a test can find and cut its own connections.
func NewNamedClient(addr, name string) redis.UniversalClient {
	if c := os.Getenv(EnvCluster); c != "" {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(c, ","), ClientName: name})
	}
	return redis.NewClient(&redis.Options{Addr: addr, ClientName: name})
}

// RequireReal skips t unless a real Redis is configured: the test depends on
// behaviour miniredis does not have (lease idle times, XAUTOCLAIM counts,
// worker subprocesses). In CI the real-Redis pass checks that such tests ran.
func RequireReal(t testing.TB) {
	t.Helper()
	if !Real() {
		t.Skip("needs a real Redis: set " + EnvAddr)
	}
}

// Env is one test's Redis.
type Env struct {
	RDB  redis.UniversalClient
	Mini *miniredis.Miniredis // nil on real Redis
	Addr string
	DB   int // database number on a real server
}

// Redis returns a fresh Redis for t: a new miniredis, or a client of the real
// server (tests there isolate themselves by queue name; see Queue).
func Redis(t testing.TB) *Env {
	t.Helper()
	if c := os.Getenv(EnvCluster); c != "" {
		rdb := NewClient("")
		t.Cleanup(func() { _ = rdb.Close() })
		return &Env{RDB: rdb, Addr: strings.Split(c, ",")[0]}
	}
	if addr := os.Getenv(EnvAddr); addr != "" {
		rdb := NewClient(addr)
		t.Cleanup(func() { _ = rdb.Close() })
		return &Env{RDB: rdb, Addr: addr}
	}
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return &Env{RDB: rdb, Mini: m, Addr: m.Addr()}
}

// IsolatedRedis returns a Redis that no other test uses at the same time,
// for tests of fleet-wide processes (coordinators serve every queue of
// their Redis): a new miniredis, or on a real server database db,
// flushed first (the caller must not run in parallel with other users of
// it; give each test package its own db, as TestIsolatedDatabasesDiffer
// checks). On a cluster, which has one database, it is a new miniredis.
// Database 0 is the one every package's tests share on a real server, so
// db 0 always means a new miniredis: flushing it would wipe what tests
// running at the same time wrote.
func IsolatedRedis(t testing.TB, db int) *Env {
	t.Helper()
	addr := os.Getenv(EnvAddr)
	if addr == "" || os.Getenv(EnvCluster) != "" || db == 0 {
		m := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
		t.Cleanup(func() { _ = rdb.Close() })
		return &Env{RDB: rdb, Mini: m, Addr: m.Addr()}
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	t.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	return &Env{RDB: rdb, Addr: addr, DB: db}
}

// NewEnvClient returns another client of env's Redis (its database
// included).
func NewEnvClient(env *Env) redis.UniversalClient {
	if env.Mini != nil {
		// Its own miniredis (also in the cluster pass, for IsolatedRedis).
		return redis.NewClient(&redis.Options{Addr: env.Mini.Addr()})
	}
	if env.DB != 0 {
		return redis.NewClient(&redis.Options{Addr: env.Addr, DB: env.DB})
	}
	return NewClient(env.Addr)
}

var unsafe = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// Queue returns a queue name unique to this test run.
func Queue(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := unsafe.ReplaceAllString(t.Name(), "_")
	if len(name) > 80 {
		name = name[len(name)-80:]
	}
	return name + "-" + hex.EncodeToString(b[:])
}

// Eventually polls cond until it holds or timeout passes, then fails t.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// LeakOptions is the one shared ignore list for goleak.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		// go-redis' pool reaper of clients that tests close in t.Cleanup
		// after goleak's check has started is not ours to wait for.
		goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).reaper"),
		// After a failed dial go-redis tries again in the background, a
		// second apart, until a dial works or the client is closed: a
		// test that closed the client of a Redis it stopped leaves one
		// asleep for up to a second, longer than goleak waits on a busy
		// machine.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
	}
}

// subprocessMain, when set by a test package's init, runs instead of the
// tests when the binary is started with ASYNC_TEST_SUBPROCESS set: tests
// start worker processes from their own binary.
var subprocessMain func(role string)

// SetSubprocessMain registers the function a subprocess runs.
func SetSubprocessMain(f func(role string)) { subprocessMain = f }

// RunSubprocess runs the registered subprocess role and reports whether it
// did; TestMain returns at once when it did.
func RunSubprocess() bool {
	role := os.Getenv("ASYNC_TEST_SUBPROCESS")
	if role == "" || subprocessMain == nil {
		return false
	}
	subprocessMain(role)
	return true
}
