package store

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// The resume records of package upload's multipart uploads. A
// record is a hash in the task's queue slot (keys.Queue.Upload); the
// queue's sorted set keys.Queue.Uploads lists the tasks that have one.

// UploadRecord is what a task's multipart upload has done (decoded by
// codec.DecodeUploadRecord).
type UploadRecord = codec.UploadRecord

// UploadPart is one stored part, as the attempt that sent it computed.
type UploadPart = codec.UploadPart

// UploadBegin records rec for the task with key key of queue q, unless one
// is recorded already, and returns the upload id that is (rec.ID, or the
// earlier one: the caller then aborts its own). rec.Parts are not written.
func UploadBegin(ctx context.Context, rdb redis.Cmdable, q keys.Queue, key string, rec UploadRecord) (string, error) {
	args := []any{key, rec.ID,
		"bucket", rec.Bucket, "object", rec.Object, "dest", rec.Dest, "fp", rec.Fingerprint,
		"psize", rec.PartSize, "size", rec.Size}
	id, err := script.UpBegin.Run(ctx, rdb, []string{q.Upload(key), q.Uploads()}, args...).Text()
	if err != nil {
		return "", fmt.Errorf("record upload of %s: %w", key, err)
	}
	return id, nil
}

// UploadPartDone records part n of upload id as stored. It reports false
// when the task's record is gone or of another upload.
func UploadPartDone(ctx context.Context, rdb redis.Cmdable, q keys.Queue, key, id string, n int, p UploadPart) (bool, error) {
	r, err := script.UpPart.Run(ctx, rdb, []string{q.Upload(key)}, id, "p:"+strconv.Itoa(n), codec.EncodeUploadPart(p)).Int()
	if err != nil {
		return false, fmt.Errorf("record part %d of %s: %w", n, key, err)
	}
	return r == 1, nil
}

// UploadEnd removes the task's record if it is of upload id (or there is
// none) and the task from the queue's open uploads. It reports false when
// the record is of another upload (and stays).
func UploadEnd(ctx context.Context, rdb redis.Cmdable, q keys.Queue, key, id string) (bool, error) {
	r, err := script.UpEnd.Run(ctx, rdb, []string{q.Upload(key), q.Uploads()}, key, id).Int()
	if err != nil {
		return false, fmt.Errorf("remove upload record of %s: %w", key, err)
	}
	return r == 1, nil
}

// UploadRead reads the task's record; found is false when there is none.
// A field it cannot parse makes an error (the caller starts over).
func UploadRead(ctx context.Context, rdb redis.Cmdable, q keys.Queue, key string) (rec UploadRecord, found bool, err error) {
	m, err := rdb.HGetAll(ctx, q.Upload(key)).Result()
	if err != nil {
		return rec, false, fmt.Errorf("read upload record of %s: %w", key, err)
	}
	rec, found, err = codec.DecodeUploadRecord(m)
	if err != nil {
		return rec, found, fmt.Errorf("upload record of %s: %w", key, err)
	}
	return rec, found, nil
}

// UploadTasks lists up to count keys of queue q's tasks with a recorded
// upload, oldest first, from the start-th.
func UploadTasks(ctx context.Context, rdb redis.Cmdable, q keys.Queue, start, count int64) ([]string, error) {
	ks, err := rdb.ZRange(ctx, q.Uploads(), start, start+count-1).Result()
	if err != nil {
		return nil, fmt.Errorf("list open uploads of %s: %w", q.Name, err)
	}
	return ks, nil
}
