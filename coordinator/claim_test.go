package coordinator_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/internal/asynctest"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// A coordinator whose housekeeping claim reply is lost keeps house that
// interval all the same: go-redis' resend finds the claim held by its own
// token. Every claim here loses its first reply, so a claim that does not
// recognise its own token never keeps house.
func TestHousekeepClaimSurvivesResend(t *testing.T) {
	env := asynctest.IsolatedRedis(t, isolatedDB)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A continuation of a queue no worker serves, its parent ended: only
	// housekeeping activates it.
	q := keys.ForQueue(asynctest.Queue(t))
	if err := store.RegisterQueue(ctx, env.RDB, q.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateWaiting(ctx, env.RDB, q, "c", []byte("x"), "op-claim"); err != nil {
		t.Fatal(err)
	}
	if err := env.RDB.XAdd(ctx, &redis.XAddArgs{Stream: q.Outbox(), Values: []any{"s", store.ContSpec(q.Name, "c", false), "p", q.Name + "/p", "st", "succeeded"}}).Err(); err != nil {
		t.Fatal(err)
	}

	p := startDropProxy(t, env.Addr, keys.HousekeepClaim)
	rdb := redis.NewClient(&redis.Options{Addr: p.addr(), DB: env.DB})
	t.Cleanup(func() { _ = rdb.Close() })
	// A claim lives 9/10 of the interval: long past go-redis' resend (a
	// shorter one could expire before the resend came, and let it through).
	co, err := coordinator.New(rdb, &coordinator.Config{HousekeepInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := co.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = co.Stop(context.Background()) }()
	asynctest.Eventually(t, 15*time.Second, "housekeeping to activate the continuation", func() bool {
		st, _ := env.RDB.HGet(ctx, q.Task("c"), "st").Result()
		return st == "pending"
	})
	if p.repliesLost() == 0 {
		t.Fatal("no claim reply was lost: the test tests nothing")
	}
}

// dropProxy forwards TCP connections to a Redis and loses the reply to the
// first sending of each distinct chunk that contains drop: the server
// applies it, the client's connection is cut before the reply, and
// go-redis sends it again.
type dropProxy struct {
	ln     net.Listener
	target string
	drop   string

	mu    sync.Mutex
	conns []net.Conn
	seen  map[string]bool
	lost  int
	wg    sync.WaitGroup
}

func startDropProxy(t *testing.T, target, drop string) *dropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{ln: ln, target: target, drop: drop, seen: map[string]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *dropProxy) addr() string { return p.ln.Addr().String() }

func (p *dropProxy) repliesLost() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lost
}

func (p *dropProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *dropProxy) firstSending(b []byte) bool {
	if !strings.Contains(string(b), p.drop) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen[string(b)] {
		return false
	}
	p.seen[string(b)] = true
	p.lost++
	return true
}

func (p *dropProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		var cut atomic.Bool // the next reply is lost
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			defer s.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if p.firstSending(buf[:n]) {
						cut.Store(true)
					}
					if _, err := s.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
		go func() {
			defer p.wg.Done()
			defer c.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 && cut.Load() {
					_ = s.Close()
					return
				}
				if n > 0 {
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}
