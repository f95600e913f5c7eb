package store

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// resendCap bounds the resend window of a client whose options leave some
// step without a timeout (a read or pool wait that can block for ever): a
// marker cannot live for ever, so such a client is only safe for resends
// that happen within this long of the first attempt.
const resendCap = time.Hour

// unknownWindow is the window assumed for a redis.UniversalClient of a type
// whose options cannot be read (a wrapper of the caller's): that of a client
// with go-redis' defaults, rounded up.
const unknownWindow = 3 * time.Minute

// retryProfile is what decides how long go-redis may keep resending one
// command.
type retryProfile struct {
	attempts     int           // tries in all, the first included
	backoff      time.Duration // most sleep between two tries
	pool         time.Duration // most wait for a pooled connection
	dial         time.Duration // most time to dial a new one, its own retries included
	write, read  time.Duration // socket timeouts
	unboundedOps bool          // a step has no timeout
}

// ResendWindow returns how long after a command first reaches Redis the
// client rdb may still send it again: go-redis resends a command whose
// reply it did not read (timeout, EOF, LOADING, ...) up to MaxRetries times
// (on a cluster client, MaxRedirects times again over that), and each new
// try may wait for a pooled connection, dial one, write and read before it
// fails in turn, with a backoff between tries. The first try reaches Redis
// at the earliest right after its write, the last one at the latest just
// before its own read: the window is every step of the tries after the
// first, and the first try's read.
//
// Anything that recognises a resent write by a marker in Redis (an op id)
// must keep that marker at least this long; MarkerTTL adds a margin.
func ResendWindow(rdb redis.UniversalClient) time.Duration {
	p, ok := profileOf(rdb)
	if !ok {
		return unknownWindow
	}
	if p.unboundedOps {
		return resendCap
	}
	retries := time.Duration(max(p.attempts-1, 0))
	w := p.read + retries*(p.backoff+p.pool+p.dial+p.write+p.read)
	return min(w, resendCap)
}

// MarkerTTL is how long a marker that makes a write safe to resend lives:
// the client's ResendWindow, plus a tenth and two seconds for the time
// Redis itself takes to get to a command (its expiry clock runs while it
// is busy).
func MarkerTTL(rdb redis.UniversalClient) time.Duration {
	w := ResendWindow(rdb)
	return w + w/10 + 2*time.Second
}

// ContextDeadlines reports whether rdb bounds its socket reads and writes by
// the caller's ctx deadline (go-redis' ContextTimeoutEnabled); known is false
// for a client of a type whose options cannot be read.
func ContextDeadlines(rdb redis.UniversalClient) (enabled, known bool) {
	switch c := rdb.(type) {
	case singleClient: // *redis.Client, or a type embedding one
		return c.Options().ContextTimeoutEnabled, true
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled, true
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled, true
	}
	return false, false
}

// singleClient is a client of one Redis server: a *redis.Client, or a type
// that embeds one (the test kit's clients do).
type singleClient interface{ Options() *redis.Options }

func profileOf(rdb redis.UniversalClient) (retryProfile, bool) {
	switch c := rdb.(type) {
	case singleClient:
		o := c.Options()
		return profile(1+max(o.MaxRetries, 0), o.MaxRetryBackoff, o.PoolTimeout,
			o.DialTimeout, o.DialerRetries, o.DialerRetryTimeout, o.WriteTimeout, o.ReadTimeout), true
	case *redis.ClusterClient:
		o := c.Options()
		// The cluster client tries a command up to MaxRedirects+1 times,
		// and each node client up to MaxRetries+1 times (-1: none again).
		per := 1 + max(o.MaxRetries, 0)
		return profile(per*(1+max(o.MaxRedirects, 0)), o.MaxRetryBackoff, o.PoolTimeout,
			o.DialTimeout, 5, 100*time.Millisecond, o.WriteTimeout, o.ReadTimeout), true
	case *redis.Ring:
		o := c.Options()
		return profile(1+max(o.MaxRetries, 0), o.MaxRetryBackoff, o.PoolTimeout,
			o.DialTimeout, 5, 100*time.Millisecond, o.WriteTimeout, o.ReadTimeout), true
	}
	return retryProfile{}, false
}

// profile turns options (after go-redis applied its defaults: a zero or
// negative timeout there means none) into a retryProfile.
func profile(attempts int, backoff, pool, dial time.Duration, dialRetries int, dialBackoff, write, read time.Duration) retryProfile {
	p := retryProfile{attempts: attempts, backoff: max(backoff, 0)}
	if pool <= 0 || dial <= 0 || write <= 0 || read <= 0 {
		p.unboundedOps = true
		return p
	}
	p.pool, p.write, p.read = pool, write, read
	p.dial = time.Duration(max(dialRetries, 1)) * (dial + max(dialBackoff, 0))
	return p
}
