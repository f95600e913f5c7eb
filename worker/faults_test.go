package worker_test

// Faults between a worker and Redis: a proxy that black-holes the replies
// of chosen connections, and a private redis-server for the faults that
// touch the whole server (CLIENT PAUSE, maxmemory).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/testenv"
)

// holeProxy forwards TCP connections to a Redis and can black-hole the
// replies of a connection: the commands still reach Redis, the answers
// never come back (a peer gone silent).
type holeProxy struct {
	l      net.Listener
	target string
	wg     sync.WaitGroup

	mu      sync.Mutex
	conns   map[*proxyConn]bool
	armed   string         // black-hole the next connection sending EVALSHA of this sha
	all     bool           // black-hole every connection
	holed   int            // connections black-holed so far
	counted string         // a sha whose EVALSHAs on open connections are counted
	count   int            // EVALSHAs of counted passed on since it was set
	seen    map[string]int // EVALSHAs by sha, on every connection
	refused string         // a sha whose next EVALSHAs are answered by the proxy
	refuseN int            // how many more of them
	answer  string         // the proxy's answer to them (a RESP reply)
}

type proxyConn struct {
	c, s  net.Conn
	holed bool // guarded by the proxy's mu

	wmu sync.Mutex // one writer to c at a time
}

func (pc *proxyConn) reply(b []byte) error {
	pc.wmu.Lock()
	defer pc.wmu.Unlock()
	_, err := pc.c.Write(b)
	return err
}

// startProxy starts a holeProxy to target, closed at the end of t.
func startProxy(t *testing.T, target string) *holeProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holeProxy{l: l, target: target, conns: map[*proxyConn]bool{}, seen: map[string]int{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = l.Close()
		p.heal()
		p.wg.Wait()
	})
	return p
}

func (p *holeProxy) addr() string { return p.l.Addr().String() }

func (p *holeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		pc := &proxyConn{c: c, s: s}
		p.mu.Lock()
		p.conns[pc] = true
		pc.holed = p.all
		p.mu.Unlock()
		p.wg.Add(2)
		go p.replies(pc)
		go p.commands(pc)
	}
}

// replies copies Redis' answers to the client unless pc is black-holed.
func (p *holeProxy) replies(pc *proxyConn) {
	defer p.wg.Done()
	defer pc.c.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := pc.s.Read(buf)
		if n > 0 {
			p.mu.Lock()
			holed := pc.holed
			p.mu.Unlock()
			if !holed {
				if werr := pc.reply(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// commands reads the client's commands one at a time, notes them, and
// passes them on.
func (p *holeProxy) commands(pc *proxyConn) {
	defer p.wg.Done()
	defer func() {
		_ = pc.s.Close()
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}()
	r := bufio.NewReader(pc.c)
	for {
		raw, args, err := readCommand(r)
		if err != nil {
			return
		}
		if len(args) > 1 && strings.EqualFold(args[0], "evalsha") {
			p.mu.Lock()
			if p.refused == args[1] && p.refuseN > 0 {
				// go-redis sends one command at a time on a connection
				// outside pipelines: no reply is on its way to it now.
				p.refuseN--
				answer := p.answer
				p.mu.Unlock()
				if pc.reply([]byte(answer)) != nil {
					return
				}
				continue
			}
			p.seen[args[1]]++
			if p.armed == args[1] && !pc.holed {
				pc.holed, p.armed = true, ""
				p.holed++
			}
			if p.counted == args[1] && !pc.holed {
				p.count++
			}
			p.mu.Unlock()
		}
		if _, err := pc.s.Write(raw); err != nil {
			return
		}
	}
}

// readCommand reads one RESP command (an array of bulk strings, as go-redis
// sends them): its bytes and its arguments.
func readCommand(r *bufio.Reader) (raw []byte, args []string, err error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, nil, err
	}
	if !strings.HasPrefix(line, "*") {
		return nil, nil, fmt.Errorf("proxy: command line %q is not an array", line)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil {
		return nil, nil, err
	}
	raw = append(raw, line...)
	for i := 0; i < n; i++ {
		h, err := r.ReadString('\n')
		if err != nil {
			return nil, nil, err
		}
		if !strings.HasPrefix(h, "$") {
			return nil, nil, fmt.Errorf("proxy: argument header %q is not a bulk string", h)
		}
		size, err := strconv.Atoi(strings.TrimSpace(h[1:]))
		if err != nil {
			return nil, nil, err
		}
		b := make([]byte, size+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, nil, err
		}
		raw = append(append(raw, h...), b...)
		args = append(args, string(b[:size]))
	}
	return raw, args, nil
}

// holeNext black-holes the next connection that sends EVALSHA sha, and
// from then on counts the EVALSHAs of sha passed on by the others.
func (p *holeProxy) holeNext(sha string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed, p.counted, p.count = sha, sha, 0
}

// refuse answers the next n EVALSHAs of sha with the error reply msg
// itself, without passing them on.
func (p *holeProxy) refuse(sha string, n int, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refused, p.refuseN, p.answer = sha, n, "-"+msg+"\r\n"
}

// refusing returns how many refusals are left.
func (p *holeProxy) refusing() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refuseN
}

// holeAll black-holes every connection, open or new.
func (p *holeProxy) holeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.all = true
	for pc := range p.conns {
		pc.holed = true
	}
}

// stats returns how many connections were black-holed, and how many
// EVALSHAs of the counted sha the others passed on.
func (p *holeProxy) stats() (holed, count int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.holed, p.count
}

// heal closes every connection (their clients see them fail and dial new
// ones) and black-holes nothing more.
func (p *holeProxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.all, p.armed = false, ""
	for pc := range p.conns {
		_ = pc.c.Close()
		_ = pc.s.Close()
	}
}

// standaloneAddr is the address of a standalone Redis for t: the real one
// of the suite, or in the cluster pass (whose nodes answer MOVED for keys
// of other slots) a miniredis of t's own.
func standaloneAddr(t *testing.T, env *testenv.Env) string {
	if os.Getenv(testenv.EnvCluster) != "" {
		return miniredis.RunT(t).Addr()
	}
	return env.Addr
}

// privateRedis is testenv.PrivateRedis.
func privateRedis(t *testing.T, args ...string) string {
	t.Helper()
	return testenv.PrivateRedis(t, args...)
}

// redisMs reads Redis' clock in Unix ms.
func redisMs(ctx context.Context, rdb redis.UniversalClient) (int64, error) {
	t, err := rdb.Time(ctx).Result()
	if err != nil {
		return 0, err
	}
	return t.UnixMilli(), nil
}

var errStillRunning = errors.New("the handler still runs")
