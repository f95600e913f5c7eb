package store

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// UploadSweep removes the record of upload id of the task with key key of
// queue q, and its listing, if the task is still ended (dead, cancelled,
// succeeded) or not known, in one call (upsweep.lua). It reports whether
// the record is gone for that reason (true also when there was none): only
// then may the caller abort the upload. False: the task runs again (put
// back by RetryDead since its state was read) or the record is of another
// upload; nothing changed.
func UploadSweep(ctx context.Context, rdb redis.Cmdable, q keys.Queue, key, id string) (bool, error) {
	r, err := script.UpSweep.Run(ctx, rdb, []string{q.Task(key), q.Upload(key), q.Uploads()}, key, id).Int()
	if err != nil {
		return false, fmt.Errorf("sweep upload record of %s: %w", key, err)
	}
	return r == 1, nil
}
