package client_test

import (
	"bufio"
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

// faultProxy stands between a go-redis client and a Redis server and changes
// what chosen commands get back, as a network or a restarting Redis would:
// a reply lost with its connection (go-redis resends the command), or an
// error reply in place of Redis' own.
type faultProxy struct {
	backend string
	ln      net.Listener
	wg      sync.WaitGroup

	mu    sync.Mutex
	rules []*faultRule
	conns map[net.Conn]struct{}
}

// A faultRule acts on the commands match accepts, times times.
type faultRule struct {
	match func(args []string) bool
	times int
	// cut: the command reaches Redis, then the client's connection is
	// closed instead of its reply.
	cut bool
	// reply, when not "", is the RESP answer sent instead of Redis' reply;
	// with forward set the command reaches Redis first.
	reply   string
	forward bool
	// after runs once Redis answered and before the rule acts.
	after func(args []string)

	hits int
}

// proxyEnv is the Redis a fault proxy fronts: the test's, or in the cluster
// pass (the proxy talks to one server) a miniredis of its own.
func proxyEnv(t *testing.T) *testenv.Env {
	t.Helper()
	if os.Getenv(testenv.EnvCluster) == "" {
		return testenv.Redis(t)
	}
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return &testenv.Env{RDB: rdb, Mini: m, Addr: m.Addr()}
}

// newFaultProxy starts a proxy of env's Redis (see proxyEnv), stopped at
// the end of t.
func newFaultProxy(t *testing.T, env *testenv.Env) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{backend: env.Addr, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// client returns a go-redis client with default options through the proxy,
// on env's database.
func (p *faultProxy) client(t *testing.T, env *testenv.Env) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: p.ln.Addr().String(), DB: env.DB})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func (p *faultProxy) add(r *faultRule) *faultRule {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, r)
	return r
}

// hitCount is how many commands r acted on.
func (p *faultProxy) hitCount(r *faultRule) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return r.hits
}

// ruleFor returns the rule that acts on args, counting the hit.
func (p *faultProxy) ruleFor(args []string) *faultRule {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.rules {
		if r.hits < r.times && r.match(args) {
			r.hits++
			return r
		}
	}
	return nil
}

func (p *faultProxy) track(c net.Conn, on bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		if p.conns == nil {
			return false
		}
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve forwards one connection's commands one at a time (a pipeline is
// forwarded command by command, in order).
func (p *faultProxy) serve(c net.Conn) {
	defer p.wg.Done()
	defer c.Close()
	b, err := net.Dial("tcp", p.backend)
	if err != nil {
		return
	}
	defer b.Close()
	p.track(c, true)
	p.track(b, true)
	defer p.track(c, false)
	defer p.track(b, false)
	cr, br := bufio.NewReader(c), bufio.NewReader(b)
	for {
		args, raw, err := readArgs(cr)
		if err != nil {
			return
		}
		r := p.ruleFor(args)
		var reply []byte
		if r == nil || r.cut || r.reply == "" || r.forward {
			if _, err := b.Write(raw); err != nil {
				return
			}
			if reply, err = readReply(br); err != nil {
				return
			}
		}
		if r != nil {
			if r.after != nil {
				r.after(args)
			}
			if r.cut {
				return
			}
			if r.reply != "" {
				reply = []byte(r.reply)
			}
		}
		if _, err := c.Write(reply); err != nil {
			return
		}
	}
}

// readArgs reads one command (an array of bulk strings) and returns its
// arguments and its bytes.
func readArgs(r *bufio.Reader) ([]string, []byte, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, nil, err
	}
	if !strings.HasPrefix(line, "*") {
		return nil, nil, fmt.Errorf("command %q is not an array", line)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil {
		return nil, nil, err
	}
	raw := []byte(line)
	args := make([]string, n)
	for i := range args {
		hdr, err := r.ReadString('\n')
		if err != nil {
			return nil, nil, err
		}
		size, err := strconv.Atoi(strings.TrimSpace(hdr[1:]))
		if err != nil {
			return nil, nil, err
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, nil, err
		}
		raw = append(append(raw, hdr...), buf...)
		args[i] = string(buf[:size])
	}
	return args, raw, nil
}

// readReply reads one RESP2 or RESP3 reply and returns its bytes.
func readReply(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 {
		return nil, errors.New("short reply line")
	}
	out := line
	n, _ := strconv.Atoi(strings.TrimSpace(string(line[1:])))
	switch line[0] {
	case '$', '!', '=':
		if n < 0 {
			return out, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return append(out, buf...), nil
	case '*', '~', '>', '%', '|':
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		for i := 0; i < n; i++ {
			el, err := readReply(r)
			if err != nil {
				return nil, err
			}
			out = append(out, el...)
		}
		if line[0] == '|' {
			// Attributes precede the reply they describe.
			el, err := readReply(r)
			if err != nil {
				return nil, err
			}
			out = append(out, el...)
		}
		return out, nil
	}
	return out, nil
}

// evalOf matches the EVALSHA (or EVAL) calls of script s.
func evalOf(s *redis.Script) func(args []string) bool {
	return func(args []string) bool {
		if len(args) < 2 {
			return false
		}
		switch strings.ToUpper(args[0]) {
		case "EVALSHA":
			return args[1] == s.Hash()
		case "EVAL":
			return redis.NewScript(args[1]).Hash() == s.Hash()
		}
		return false
	}
}

// scriptKeys returns the keys of an EVALSHA or EVAL command.
func scriptKeys(args []string) []string {
	n, _ := strconv.Atoi(args[2])
	return args[3 : 3+n]
}
