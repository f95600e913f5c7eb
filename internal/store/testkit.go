package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// This file holds the commands of the public test kit (package asynctest).

// LapseLeases makes the attempts pending under consumer in q look as if
// their lease (leaseMs) had ended, keeping their consumer and delivery
// count, so that the next reclaim of any worker takes them over (see
// leaselapse.lua). It returns the ids of the entries it touched.
func LapseLeases(ctx context.Context, rdb redis.Scripter, q keys.Queue, consumer string, leaseMs int64) ([]string, error) {
	ids, err := script.LeaseLapse.Run(ctx, rdb, []string{q.Stream()}, keys.Group, consumer, leaseMs, 10000).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("lapse the leases of %s in queue %q: %w", consumer, q.Name, err)
	}
	return ids, nil
}

// TakeTestKitLock takes the test kit's lock of the database (key,
// keys.TestKitLock) for holder, for ttl, or renews it when holder holds it;
// it returns the holder found when another one holds it. A resend finds
// the lock its first run took, and renews it.
func TakeTestKitLock(ctx context.Context, rdb redis.Cmdable, key, holder string, ttl time.Duration) (ok bool, other string, err error) {
	set, err := rdb.SetNX(ctx, key, holder, ttl).Result()
	if err != nil {
		return false, "", fmt.Errorf("take the test kit's lock: %w", err)
	}
	if set {
		return true, holder, nil
	}
	cur, err := rdb.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return false, "", nil // it just expired: try again
	}
	if err != nil {
		return false, "", fmt.Errorf("read the test kit's lock: %w", err)
	}
	if cur != holder {
		return false, cur, nil
	}
	// Ours (a resend of the SET NX, or a renewal).
	if err := rdb.PExpire(ctx, key, ttl).Err(); err != nil {
		return false, "", fmt.Errorf("renew the test kit's lock: %w", err)
	}
	return true, holder, nil
}

// ReleaseTestKitLock deletes the test kit's lock (key) if holder holds it.
func ReleaseTestKitLock(ctx context.Context, rdb redis.Scripter, key, holder string) error {
	if err := script.CompareDel.Run(ctx, rdb, []string{key}, holder).Err(); err != nil {
		return fmt.Errorf("release the test kit's lock: %w", err)
	}
	return nil
}

// ClaimTestKitDB makes the database, whose lock the caller holds, the test
// kit's and empty: it refuses (ErrForeignData) a database that holds keys
// without the kit's marker, else deletes every key but the lock and sets
// the marker.
func ClaimTestKitDB(ctx context.Context, rdb redis.Cmdable) error {
	marked, err := rdb.Exists(ctx, keys.TestKitMarker).Result()
	if err != nil {
		return fmt.Errorf("read the test kit's marker: %w", err)
	}
	if marked == 0 {
		var sample []string
		iter := rdb.Scan(ctx, 0, "*", 100).Iterator()
		for iter.Next(ctx) && len(sample) < 3 {
			if k := iter.Val(); k != keys.TestKitLock {
				sample = append(sample, k)
			}
		}
		if err := iter.Err(); err != nil {
			return fmt.Errorf("scan the database: %w", err)
		}
		if len(sample) > 0 {
			return fmt.Errorf("%w: keys such as %q", ErrForeignData, sample)
		}
		if err := rdb.Set(ctx, keys.TestKitMarker, "asynctest", 0).Err(); err != nil {
			return fmt.Errorf("mark the database as the test kit's: %w", err)
		}
	}
	// Every key but the lock and the marker, a batch at a time.
	var cursor uint64
	for {
		ks, next, err := rdb.Scan(ctx, cursor, "*", 1000).Result()
		if err != nil {
			return fmt.Errorf("scan the database: %w", err)
		}
		var del []string
		for _, k := range ks {
			if k != keys.TestKitLock && k != keys.TestKitMarker {
				del = append(del, k)
			}
		}
		if len(del) > 0 {
			if err := rdb.Unlink(ctx, del...).Err(); err != nil {
				return fmt.Errorf("empty the database: %w", err)
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// ErrForeignData is returned by ClaimTestKitDB for a database holding keys
// the test kit did not write.
var ErrForeignData = errors.New("the database holds keys the test kit did not write")
