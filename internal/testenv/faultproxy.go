package testenv

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/script"
)

// FaultProxy is a TCP proxy in front of one Redis that injects the faults a
// network does: it drops the reply of a chosen command (the command reaches
// Redis and runs, then the proxy closes the client's connection instead of
// forwarding its reply, so go-redis resends it), delays chosen commands, and
// cuts every connection at once. It parses the RESP requests of each client
// connection and the server's replies in order, pipelines included, and
// records every command it forwards.
//
// It serves one address: a go-redis ClusterClient follows the node addresses
// of CLUSTER SLOTS and would bypass it, so a test that needs it on the cluster
// pass puts it in front of a Redis of its own (IsolatedRedis gives one).
//
// Connection set-up (HELLO, CLIENT SETINFO, SELECT, ...) passes through like
// any command and is recorded; rules match it only when their predicate does.
// A connection that subscribes (SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE) or runs
// MONITOR becomes a plain pipe: its server messages are not replies, so no
// rule applies to its later commands (CutAll still cuts it). RESP3 push
// frames are forwarded as they come and are never taken for a reply.
type FaultProxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu      sync.Mutex
	conns   map[*proxyConn]struct{}
	rules   []*rule
	seen    []Command
	dropped int
	closed  bool
}

// Command is a command the proxy forwarded: its name upper-cased and its
// arguments.
type Command struct {
	Name string
	Args []string
}

// Arg returns the command's i-th argument, or "" when it has fewer.
func (c Command) Arg(i int) string {
	if i < len(c.Args) {
		return c.Args[i]
	}
	return ""
}

// String names the command and its first argument, a script by its file name
// when it is one of the project's (EVALSHA enqueue): what a conformance table
// enumerates.
func (c Command) String() string {
	switch c.Name {
	case "EVALSHA", "EVALSHA_RO":
		return c.Name + " " + ScriptName(c.Arg(0))
	case "EVAL", "EVAL_RO":
		return c.Name + " " + ScriptName(scriptSHA(c.Arg(0)))
	}
	if len(c.Args) == 0 {
		return c.Name
	}
	return c.Name + " " + c.Args[0]
}

// Match is a predicate on a command.
type Match func(Command) bool

// MatchCommand matches a command by its String form ("EVALSHA enqueue",
// "XADD async:{q:x}:stream"): it is how a table names the call it faults,
// and EVAL of a script matches as its EVALSHA does (go-redis falls back to
// EVAL on NOSCRIPT).
func MatchCommand(s string) Match {
	return func(c Command) bool {
		got := c.String()
		if got == s {
			return true
		}
		return strings.HasPrefix(c.Name, "EVAL") && strings.TrimPrefix(got, "EVAL ") == strings.TrimPrefix(s, "EVALSHA ")
	}
}

// MatchName matches commands by name (case-insensitive).
func MatchName(names ...string) Match {
	return func(c Command) bool {
		for _, n := range names {
			if strings.EqualFold(c.Name, n) {
				return true
			}
		}
		return false
	}
}

// MatchArg matches commands with an argument that contains s (a key, a
// marker).
func MatchArg(s string) Match {
	return func(c Command) bool {
		for _, a := range c.Args {
			if strings.Contains(a, s) {
				return true
			}
		}
		return false
	}
}

// FirstSending matches the first sending of each distinct command matching
// m: a resend of it (the same name and arguments) does not match again. Used
// with DropReply, it loses the first reply of every such command, however
// many there are, and lets each resend through.
func FirstSending(m Match) Match {
	seen := map[string]bool{}
	return func(c Command) bool {
		if !m(c) {
			return false
		}
		k := c.Name + "\x00" + strings.Join(c.Args, "\x00")
		if seen[k] {
			return false
		}
		seen[k] = true
		return true
	}
}

// MatchWrite matches every command that may write: scripts, functions, the
// writing commands of the data types the project uses, and EXEC (the
// commands of a MULTI block only run at its EXEC: a lost reply of one of
// them is a connection lost before the block ran).
func MatchWrite() Match { return IsWrite }

// IsWrite reports whether c may write (see MatchWrite).
func IsWrite(c Command) bool { return writeCommands[c.Name] }

var writeCommands = map[string]bool{}

func init() {
	for _, n := range strings.Fields(`EVAL EVALSHA FCALL
		SET SETNX SETEX PSETEX GETSET GETDEL GETEX APPEND INCR INCRBY INCRBYFLOAT DECR DECRBY MSET MSETNX SETRANGE
		DEL UNLINK EXPIRE PEXPIRE EXPIREAT PEXPIREAT PERSIST RENAME RENAMENX COPY MOVE RESTORE
		HSET HSETNX HMSET HDEL HINCRBY HINCRBYFLOAT
		LPUSH RPUSH LPUSHX RPUSHX LPOP RPOP LREM LSET LTRIM LINSERT LMOVE RPOPLPUSH BLPOP BRPOP BLMOVE LMPOP BLMPOP
		SADD SREM SPOP SMOVE SINTERSTORE SUNIONSTORE SDIFFSTORE
		ZADD ZREM ZINCRBY ZPOPMIN ZPOPMAX BZPOPMIN BZPOPMAX ZREMRANGEBYSCORE ZREMRANGEBYRANK ZREMRANGEBYLEX ZRANGESTORE ZUNIONSTORE ZINTERSTORE ZMPOP BZMPOP
		XADD XDEL XTRIM XACK XCLAIM XAUTOCLAIM XGROUP XSETID
		PUBLISH SPUBLISH FLUSHDB FLUSHALL EXEC`) {
		writeCommands[n] = true
	}
	// XREADGROUP writes too (it delivers entries to a consumer).
	writeCommands["XREADGROUP"] = true
}

// IsSetup reports whether c is one that go-redis sends when it opens a
// connection (HELLO, AUTH, CLIENT SETINFO, SELECT, READONLY, ...).
func IsSetup(c Command) bool {
	switch c.Name {
	case "HELLO", "AUTH", "CLIENT", "SELECT", "READONLY", "PING":
		return true
	}
	return false
}

// ScriptName names the project script whose SHA1 is sha by its file name
// without .lua ("enqueue"), or returns sha when it is not one of them.
func ScriptName(sha string) string {
	if n, ok := scriptNames()[sha]; ok {
		return n
	}
	return sha
}

var scriptNames = sync.OnceValue(func() map[string]string {
	m := map[string]string{}
	for name, s := range map[string]*redis.Script{
		"enqueue":     script.Enqueue,
		"complete":    script.Complete,
		"heartbeat":   script.Heartbeat,
		"reclaim":     script.Reclaim,
		"forward":     script.Forward,
		"housekeep":   script.Housekeep,
		"state":       script.State,
		"retrydead":   script.RetryDead,
		"cancel":      script.Cancel,
		"contadd":     script.ContAdd,
		"waiting":     script.Waiting,
		"activate":    script.Activate,
		"purgedead":   script.PurgeDead,
		"groupnew":    script.GroupNew,
		"groupadd":    script.GroupAdd,
		"groupend":    script.GroupEnd,
		"groupcont":   script.GroupCont,
		"groupcancel": script.GroupCancel,
		"groupenq":    script.GroupEnq,
		"adopt":       script.Adopt,
		"leaselapse":  script.LeaseLapse,
		"claim":       script.Claim,
		"repmove":     script.RepMove,
		"jointtl":     script.JoinTTL,
		"kidsadd":     script.KidsAdd,
		"limacquire":  script.LimAcquire,
		"limwait":     script.LimWait,
		"limrelease":  script.LimRelease,
		"wake":        script.Wake,
		"ratelimit":   script.RateLimit,
		"comparedel":  script.CompareDel,
		"duemark":     script.DueMark,
		"dueupdate":   script.DueUpdate,
		"repdeclare":  script.RepDeclare,
		"repfire":     script.RepFire,
		"repremove":   script.RepRemove,
		"repindex":    script.RepIndex,
		"partstep":    script.PartStep,
		"parttake":    script.PartTake,
		"partappend":  script.PartAppend,
		"partdone":    script.PartDone,
		"batchadd":    script.BatchAdd,
		"batchflush":  script.BatchFlush,
		"batchend":    script.BatchEnd,
		"batchabort":  script.BatchAbort,
		"workerreg":   script.WorkerReg,
		"groupprune":  script.GroupPrune,
		"groupmk":     script.GroupMk,
		"qstats":      script.QStats,
		"pgset":       script.ProgressSet,
		"gpset":       script.GroupProgressSet,
		"upbegin":     script.UpBegin, // package upload's
		"uppart":      script.UpPart,
		"upend":       script.UpEnd,
		"upsweep":     script.UpSweep,
	} {
		m[s.Hash()] = name
	}
	return m
})

// rule is a fault on the commands matching a predicate.
type rule struct {
	match Match
	skip  int // matching commands let through first
	drop  bool
	// For a drop: replies still to drop, and matching commands marked for it
	// whose reply has not come yet (the commands behind a dropped one in a
	// pipeline are never answered, so they must not use up the count).
	drops, marked int
	// For a delay: commands still to delay (<0: all).
	delays int
	delay  time.Duration
	// For a latency: how long after it reached the proxy a command goes on.
	latency time.Duration
}

// NewFaultProxy starts a proxy to the Redis at target on 127.0.0.1:0,
// closed at the end of t.
func NewFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{target: target, ln: ln, conns: map[*proxyConn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's address, for a client's redis.Options.Addr.
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

// Options are the go-redis options of a client of env's Redis through p: it
// resends a command up to 3 times (a reply dropped twice is survived) after
// a backoff of 1–2 ms, so a faulted call costs milliseconds. env must be the
// Redis p forwards to (for its database number).
func (p *FaultProxy) Options(env *Env) *redis.Options {
	return &redis.Options{Addr: p.Addr(), DB: env.DB, MaxRetries: 3,
		MinRetryBackoff: time.Millisecond, MaxRetryBackoff: 2 * time.Millisecond}
}

// NewClient returns a client of env's Redis through p (see Options), closed
// at the end of t.
func (p *FaultProxy) NewClient(t testing.TB, env *Env) *redis.Client {
	rdb := redis.NewClient(p.Options(env))
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// DropReply drops the reply of the nth (from 1) command matching m from now
// on, and of the times-1 matching commands after it (a resend matches
// again): each runs in Redis, then its client connection is closed instead
// of getting the reply. Rules apply in the order they were added; a command
// takes the first rule that faults it.
func (p *FaultProxy) DropReply(m Match, nth, times int) {
	p.addRule(&rule{match: m, skip: nth - 1, drops: times, drop: true})
}

// Delay holds each of the next n commands matching m (all of them when n
// <= 0) for d before forwarding it, and with it the commands behind it on
// its connection.
func (p *FaultProxy) Delay(m Match, d time.Duration, n int) {
	if n <= 0 {
		n = -1
	}
	p.addRule(&rule{match: m, delays: n, delay: d})
}

// Latency forwards each command matching m no earlier than d after it
// reached the proxy: the commands a client sends together (a pipeline) wait
// d together, so each round trip takes d longer, where Delay holds each
// command in turn.
func (p *FaultProxy) Latency(m Match, d time.Duration) {
	p.addRule(&rule{match: m, latency: d})
}

func (p *FaultProxy) addRule(r *rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, r)
}

// ClearRules removes every rule.
func (p *FaultProxy) ClearRules() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
}

// Dropped is the number of replies dropped so far.
func (p *FaultProxy) Dropped() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

// Commands returns the commands forwarded so far, in the order the proxy
// read them (across connections, the order they reached it).
func (p *FaultProxy) Commands() []Command {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Command(nil), p.seen...)
}

// ResetCommands forgets the commands recorded so far.
func (p *FaultProxy) ResetCommands() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = nil
}

// CutAll closes every open connection, client and server side, at once; new
// connections are accepted as before.
func (p *FaultProxy) CutAll() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// Close stops the proxy and closes its connections.
func (p *FaultProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.CutAll()
	p.wg.Wait()
}

func (p *FaultProxy) accept() {
	defer p.wg.Done()
	for {
		cc, err := p.ln.Accept()
		if err != nil {
			return
		}
		sc, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = cc.Close()
			continue
		}
		c := &proxyConn{p: p, client: cc, server: sc, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.close()
			return
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go c.requests()
		go c.replies()
	}
}

// decide records cmd and returns what to do with it: the rule whose drop it
// is marked for, if any, and how long to hold it.
func (p *FaultProxy) decide(cmd Command) (drop *rule, delay, latency time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, cmd)
	for _, r := range p.rules {
		if r.drop {
			if drop != nil || r.drops-r.marked <= 0 || !r.match(cmd) {
				continue
			}
			if r.skip > 0 {
				r.skip--
				continue
			}
			r.marked++
			drop = r
			continue
		}
		if r.latency > 0 {
			if r.match(cmd) {
				latency = max(latency, r.latency)
			}
			continue
		}
		if r.delays != 0 && r.match(cmd) {
			if r.delays > 0 {
				r.delays--
			}
			delay = max(delay, r.delay)
		}
	}
	return drop, delay, latency
}

// settle ends a drop mark: dropped tells whether the reply was dropped, or
// never came (its connection closed first).
func (p *FaultProxy) settle(r *rule, dropped bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r.marked--
	if dropped {
		r.drops--
		p.dropped++
	}
}

// proxyConn is one client connection and its connection to the server.
type proxyConn struct {
	p              *FaultProxy
	client, server net.Conn
	once           sync.Once
	done           chan struct{}

	mu      sync.Mutex
	pending []*rule // per reply awaited, in order: the drop rule it is marked for
	plain   bool    // subscribed or monitoring: a plain pipe
	closed  bool
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		// Replies that will not come: their marks are free again, before
		// the client sees the connection end (and resends).
		c.mu.Lock()
		pending := c.pending
		c.pending = nil
		c.closed = true
		c.mu.Unlock()
		for _, r := range pending {
			if r != nil {
				c.p.settle(r, false)
			}
		}
		close(c.done)
		_ = c.client.Close()
		_ = c.server.Close()
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.mu.Unlock()
	})
}

// requests forwards the client's commands to the server.
func (c *proxyConn) requests() {
	defer c.p.wg.Done()
	defer c.close()
	r := bufio.NewReader(c.client)
	var arrived time.Time // when the bytes of the command read last came
	for {
		fresh := r.Buffered() == 0
		raw, args, err := readRESP(r, true)
		if fresh {
			arrived = time.Now()
		}
		if err != nil {
			return
		}
		if len(args) == 0 { // not a command array: pass it on
			if _, err := c.server.Write(raw); err != nil {
				return
			}
			continue
		}
		cmd := Command{Name: strings.ToUpper(args[0]), Args: args[1:]}
		drop, delay, latency := c.p.decide(cmd)
		c.mu.Lock()
		switch cmd.Name {
		case "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR":
			c.plain = true
		}
		closed := c.closed
		unmarked := drop != nil && (closed || c.plain)
		if !closed && !c.plain {
			c.pending = append(c.pending, drop)
		}
		c.mu.Unlock()
		if unmarked {
			c.p.settle(drop, false)
		}
		if closed {
			return
		}
		if wait := time.Until(arrived.Add(latency)); latency > 0 && wait > 0 {
			select {
			case <-time.After(wait):
			case <-c.done:
				return
			}
		}
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-c.done:
				return
			}
		}
		if _, err := c.server.Write(raw); err != nil {
			return
		}
	}
}

// replies forwards the server's replies to the client, but for a dropped one
// closes the connection instead.
func (c *proxyConn) replies() {
	defer c.p.wg.Done()
	defer c.close()
	r := bufio.NewReader(c.server)
	for {
		raw, _, err := readRESP(r, false)
		if err != nil {
			return
		}
		var drop *rule
		if raw[0] != '>' { // a push frame answers no command
			c.mu.Lock()
			if len(c.pending) > 0 {
				drop = c.pending[0]
				c.pending = c.pending[1:]
			}
			c.mu.Unlock()
		}
		if drop != nil {
			c.p.settle(drop, true)
			return
		}
		if _, err := c.client.Write(raw); err != nil {
			return
		}
	}
}

// readRESP reads one RESP value from r and returns its bytes; with args set
// and the value an array of bulk strings (a command), also its elements.
func readRESP(r *bufio.Reader, args bool) ([]byte, []string, error) {
	var buf bytes.Buffer
	var out []string
	var into *[]string
	if args {
		into = &out
	}
	if err := readValue(r, &buf, true, into); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), out, nil
}

var errRESP = errors.New("faultproxy: malformed RESP")

func readValue(r *bufio.Reader, buf *bytes.Buffer, top bool, args *[]string) error {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return errRESP
	}
	buf.Write(line)
	head := line[0]
	body := string(line[1 : len(line)-2])
	switch head {
	case '+', '-', ':', '_', ',', '#', '(':
		return nil
	case '$', '!', '=':
		n, err := strconv.Atoi(body)
		if err != nil {
			return fmt.Errorf("%w: %q", errRESP, line)
		}
		if n < 0 {
			return nil
		}
		start := buf.Len()
		if _, err := io.CopyN(buf, r, int64(n)+2); err != nil {
			return err
		}
		if args != nil {
			*args = append(*args, string(buf.Bytes()[start:start+n]))
		}
		return nil
	case '*', '~', '>', '%', '|':
		n, err := strconv.Atoi(body)
		if err != nil {
			return fmt.Errorf("%w: %q", errRESP, line)
		}
		if head == '%' || head == '|' {
			n *= 2
		}
		var elems *[]string
		if top && head == '*' {
			elems = args
		}
		for i := 0; i < n; i++ {
			if err := readValue(r, buf, false, elems); err != nil {
				return err
			}
		}
		if head == '|' { // attributes come before the value they describe
			return readValue(r, buf, top, args)
		}
		return nil
	}
	return fmt.Errorf("%w: %q", errRESP, line)
}

// scriptSHA is the SHA1 of a script's source, as EVALSHA names it.
func scriptSHA(src string) string {
	h := sha1.Sum([]byte(src))
	return hex.EncodeToString(h[:])
}
