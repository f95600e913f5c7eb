package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
)

// Reads of the fleet-wide concurrency limits and the rate buckets, for the
// dashboard (inspect.Throttles). Every function here only reads.

// LimitUse is what one limit holds at one moment.
type LimitUse struct {
	Scope  string // "kind:<kind>", "queue:<queue>"
	InUse  int64  // holders whose lease has not ended by nowMs
	Parked int64  // tasks waiting for a slot
}

// LimitUses reads the limits named by scopes in one pipeline: the holders
// whose lease ends at nowMs or later (ZCOUNT) and the waiters (ZCARD).
func LimitUses(ctx context.Context, rdb redis.Cmdable, scopes []string, nowMs int64) ([]LimitUse, error) {
	if len(scopes) == 0 {
		return nil, nil
	}
	hs := make([]*redis.IntCmd, len(scopes))
	ws := make([]*redis.IntCmd, len(scopes))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, s := range scopes {
			l := keys.ForLimit(s)
			hs[i] = p.ZCount(ctx, l.Holders(), strconv.FormatInt(nowMs, 10), "+inf")
			ws[i] = p.ZCard(ctx, l.Waiters())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read limits: %w", err)
	}
	out := make([]LimitUse, len(scopes))
	for i, s := range scopes {
		out[i] = LimitUse{Scope: s, InUse: hs[i].Val(), Parked: ws[i].Val()}
	}
	return out, nil
}

// RateState is one rate bucket as Redis keeps it.
type RateState struct {
	Key   string // the RateKey
	Found bool   // the bucket exists (it expires once full again)
	TatUs int64  // when it is full again, µs of Redis time
}

// RateStates reads the buckets of rateKeys in one pipeline (GET each).
func RateStates(ctx context.Context, rdb redis.Cmdable, rateKeys []string) ([]RateState, error) {
	if len(rateKeys) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.StringCmd, len(rateKeys))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range rateKeys {
			cmds[i] = p.Get(ctx, keys.RateBucket(k))
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		return nil, fmt.Errorf("read rate buckets: %w", err)
	}
	out := make([]RateState, len(rateKeys))
	for i, k := range rateKeys {
		out[i].Key = k
		v, err := cmds[i].Result()
		if err != nil {
			continue
		}
		tat, _, _ := strings.Cut(v, ",")
		if n, err := strconv.ParseInt(tat, 10, 64); err == nil {
			out[i].Found, out[i].TatUs = true, n
		}
	}
	return out, nil
}

// ThrottleScan walks the key space (SCAN MATCH keys.ThrottleMatch, on every
// master of a cluster) for the limits and rate buckets that exist, giving
// up after about maxKeys keys examined per master. It returns the limit
// scopes and rate keys found, sorted, and whether every master was walked
// to its end.
func ThrottleScan(ctx context.Context, rdb redis.UniversalClient, maxKeys int) (scopes, rateKeys []string, complete bool, err error) {
	const count = 1000
	seenL, seenR := map[string]bool{}, map[string]bool{}
	complete = true
	walk := func(ctx context.Context, node redis.Cmdable) ([]string, bool, error) {
		var found []string
		var cursor uint64
		for examined := 0; examined < maxKeys; examined += count {
			ks, next, err := node.Scan(ctx, cursor, keys.ThrottleMatch, count).Result()
			if err != nil {
				return nil, false, err
			}
			found = append(found, ks...)
			if next == 0 {
				return found, true, nil
			}
			cursor = next
		}
		return found, false, nil
	}
	var all []string
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		var mu = make(chan struct{}, 1)
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			ks, done, err := walk(ctx, node)
			mu <- struct{}{}
			all = append(all, ks...)
			complete = complete && done
			<-mu
			return err
		})
	} else {
		all, complete, err = walk(ctx, rdb)
	}
	if err != nil {
		return nil, nil, false, fmt.Errorf("scan for limits and rate buckets: %w", err)
	}
	for _, k := range all {
		switch {
		case strings.HasPrefix(k, keys.LimitPrefix):
			if s, _, ok := strings.Cut(k[len(keys.LimitPrefix):], "}:"); ok && !seenL[s] {
				seenL[s] = true
				scopes = append(scopes, s)
			}
		case strings.HasPrefix(k, keys.RatePrefix) && strings.HasSuffix(k, "}"):
			// The bucket itself, not its turn schedule or op markers.
			if r := k[len(keys.RatePrefix) : len(k)-1]; !strings.Contains(r, "}") && !seenR[r] {
				seenR[r] = true
				rateKeys = append(rateKeys, r)
			}
		}
	}
	return scopes, rateKeys, complete, nil
}
