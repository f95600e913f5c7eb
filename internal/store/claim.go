package store

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// claim takes the claim key for token for ttl (see claim.lua); false when
// another token holds it. A take resent after a lost reply is told it holds
// the claim, so token must be new for each take.
func claim(ctx context.Context, rdb redis.Scripter, key, token string, ttl time.Duration) (bool, error) {
	n, err := script.Claim.Run(ctx, rdb, []string{key}, token, ttl.Milliseconds()).Int64()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// ClaimHousekeeping takes the fleet's housekeeping claim for token for ttl;
// false when another coordinator holds it.
func ClaimHousekeeping(ctx context.Context, rdb redis.Scripter, token string, ttl time.Duration) (bool, error) {
	ok, err := claim(ctx, rdb, keys.HousekeepClaim, token, ttl)
	if err != nil {
		return false, fmt.Errorf("claim housekeeping: %w", err)
	}
	return ok, nil
}
