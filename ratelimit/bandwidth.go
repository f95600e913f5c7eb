package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bandwidth is a rate in bytes: BytesPerSecond across every process that
// shares the key, of which up to Burst bytes may go at once (after a quiet
// spell). Burst 0 means a default of BytesPerSecond/10, at least 64 KiB.
//
// Every process that shares a key must use the same Bandwidth for it.
type Bandwidth struct {
	BytesPerSecond int64
	Burst          int64
}

// MaxBytesPerSecond bounds Bandwidth.BytesPerSecond (2^50, about 1 PB/s).
const MaxBytesPerSecond = 1 << 50

// minDefaultBurst is the least default Burst: 64 KiB.
const minDefaultBurst = 64 << 10

// Validate reports what is wrong with bw, if anything (Burst 0 is allowed
// and means the default).
func (bw Bandwidth) Validate() error {
	switch {
	case bw.BytesPerSecond < 1:
		return fmt.Errorf("ratelimit: Bandwidth.BytesPerSecond is %d, must be at least 1", bw.BytesPerSecond)
	case bw.BytesPerSecond > MaxBytesPerSecond:
		return fmt.Errorf("ratelimit: Bandwidth.BytesPerSecond is %d, more than the most the limiter counts (%d)", bw.BytesPerSecond, int64(MaxBytesPerSecond))
	case bw.Burst < 0:
		return fmt.Errorf("ratelimit: Bandwidth.Burst is %d, must be 0 (meaning BytesPerSecond/10, at least 64 KiB) or more", bw.Burst)
	}
	return nil
}

// burst is bw's burst in bytes, the default applied.
func (bw Bandwidth) burst() int64 {
	if bw.Burst > 0 {
		return bw.Burst
	}
	return max(bw.BytesPerSecond/10, minDefaultBurst)
}

// BandwidthLimiter applies one Bandwidth to any number of keys (one per
// destination, say), sharing each key's budget across the fleet. Bytes are
// counted as weighted tokens of a Limiter's bucket, so it keeps the same
// promises (Redis' clock, resend safety). It is safe for concurrent use.
//
// A token is a unit of bytes: 1 byte up to 1 MB/s, and BytesPerSecond/10^6
// bytes (rounded up) above, so that a token is due at most once a µs, the
// Limiter's resolution. A call for a number of bytes that is not a whole
// number of units takes the whole units and carries the rest over to the
// key's next call in this process, so the long-run rate is exact; a
// process holds at most one unit less a byte of a key unpaid. The bucket of
// key is the Limiter's bucket of "bw:"+key (BucketKey), so a key may name
// both a request rate and a bandwidth without their budgets mixing.
type BandwidthLimiter struct {
	rdb redis.UniversalClient
	bw  Bandwidth
	err error

	lim         *Limiter
	unit        int64 // bytes per token
	burstTokens int64
	burstBytes  int64 // burstTokens units: the most one step takes

	mu    sync.Mutex
	carry map[string]int64 // per key: bytes counted and not yet taken as a token
}

// NewBandwidth returns a BandwidthLimiter of bw on rdb. A bad bw is reported
// by every call.
func NewBandwidth(rdb redis.UniversalClient, bw Bandwidth) *BandwidthLimiter {
	b := &BandwidthLimiter{rdb: rdb, bw: bw, err: bw.Validate(), carry: map[string]int64{}}
	if b.err == nil && rdb == nil {
		b.err = errors.New("ratelimit: redis client is nil")
	}
	if b.err != nil {
		return b
	}
	b.unit = (bw.BytesPerSecond + 999_999) / 1_000_000
	b.burstTokens = max(bw.burst()/b.unit, 1)
	b.burstBytes = b.burstTokens * b.unit
	// unit bytes every unit/BytesPerSecond seconds: Rate tokens per Per.
	lim := Limit{Rate: int(bw.BytesPerSecond), Per: time.Duration(b.unit) * time.Second, Burst: int(b.burstTokens)}
	if err := lim.Validate(); err != nil {
		b.err = fmt.Errorf("ratelimit: Bandwidth %+v: %w", bw, err) // not expected: the unit keeps it valid
		return b
	}
	b.lim = New(rdb, lim)
	return b
}

// Bandwidth returns the limiter's bandwidth.
func (b *BandwidthLimiter) Bandwidth() Bandwidth { return b.bw }

// bucket checks key and returns the Limiter's key for it.
func (b *BandwidthLimiter) bucket(key string) (string, error) {
	if b.err != nil {
		return "", b.err
	}
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	if len(key) > MaxKeyLen-3 {
		return "", fmt.Errorf("ratelimit: bandwidth key %.32q... is %d bytes, the limit is %d: %w", key, len(key), MaxKeyLen-3, ErrInvalidKey)
	}
	return "bw:" + key, nil
}

// tokens counts n more bytes on key and returns the whole tokens they
// complete.
func (b *BandwidthLimiter) tokens(key string, n int64) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	total := b.carry[key] + n
	t := max(total/b.unit, 0)
	if rest := total - t*b.unit; rest != 0 {
		b.carry[key] = rest
	} else {
		delete(b.carry, key)
	}
	return t
}

// uncount undoes tokens(key, n) that returned t (the tokens were not taken).
func (b *BandwidthLimiter) uncount(key string, n, t int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if rest := b.carry[key] + t*b.unit - n; rest != 0 {
		b.carry[key] = rest
	} else {
		delete(b.carry, key)
	}
}

// Wait takes n bytes from key's budget, sleeping until they are due (n may
// exceed Burst: it is taken in steps). If ctx ends first it gives back what
// it reserved and not yet used, and returns ctx.Err().
//
// Each step reserves up to Burst bytes in one call and sleeps until they
// are due, so waiters on a key are served in turn, none polls, and a large
// n does not hold the others back for longer than a step. Bytes of steps
// already waited for count as sent.
func (b *BandwidthLimiter) Wait(ctx context.Context, key string, n int64) error {
	bk, err := b.bucket(key)
	if err != nil {
		return err
	}
	if n < 0 {
		return fmt.Errorf("ratelimit: n is %d bytes, must be 0 or more", n)
	}
	if n == 0 {
		return nil
	}
	t := b.tokens(key, n)
	for t > 0 {
		step := min(t, b.burstTokens)
		d, err := b.lim.Reserve(ctx, bk, int(step))
		if err != nil {
			return err
		}
		if d > 0 {
			if err := b.sleep(ctx, bk, step, d); err != nil {
				return err
			}
		}
		t -= step
	}
	return nil
}

// sleep waits d for a reservation of step tokens, refunding it if ctx ends
// first.
func (b *BandwidthLimiter) sleep(ctx context.Context, bk string, step int64, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := b.lim.Refund(rctx, bk, int(step)); err != nil {
			return fmt.Errorf("%w (and the reservation could not be given back: %v)", ctx.Err(), err)
		}
		return ctx.Err()
	}
}

// Allow takes n bytes (1 to Burst) from key's budget if they fit now. When
// they do not, nothing is taken and retryAfter says when they would.
func (b *BandwidthLimiter) Allow(ctx context.Context, key string, n int64) (ok bool, retryAfter time.Duration, err error) {
	bk, err := b.bucket(key)
	if err != nil {
		return false, 0, err
	}
	if n < 1 || n > b.burstBytes {
		return false, 0, fmt.Errorf("ratelimit: n is %d bytes, must be 1 to the burst of %d", n, b.burstBytes)
	}
	t := b.tokens(key, n)
	if t == 0 {
		return true, 0, nil
	}
	r, err := b.lim.Allow(ctx, bk, int(t))
	if err != nil || !r.Allowed {
		b.uncount(key, n, t)
		return false, r.RetryAfter, err
	}
	return true, 0, nil
}

// Reader returns r throttled on key: each Read waits for the bytes it
// returns. A Wait error ends the reader with that error.
//
// A Read asks r for at most Burst bytes, so that one Read is one step. The
// bytes of a Read whose Wait failed are not returned (they were not paid
// for); every later Read returns the same error.
func (b *BandwidthLimiter) Reader(ctx context.Context, key string, r io.Reader) io.Reader {
	return &bandwidthReader{b: b, ctx: ctx, key: key, r: r}
}

type bandwidthReader struct {
	b   *BandwidthLimiter
	ctx context.Context
	key string
	r   io.Reader
	err error
}

func (br *bandwidthReader) Read(p []byte) (int, error) {
	if br.err != nil {
		return 0, br.err
	}
	if _, err := br.b.bucket(br.key); err != nil {
		br.err = err
		return 0, err
	}
	if int64(len(p)) > br.b.burstBytes {
		p = p[:br.b.burstBytes]
	}
	n, err := br.r.Read(p)
	if n > 0 {
		if werr := br.b.Wait(br.ctx, br.key, int64(n)); werr != nil {
			br.err = werr
			return 0, werr
		}
	}
	return n, err
}
