package upload

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Sweep makes one pass over the multipart uploads recorded in queues: the
// upload of a task that ended dead or cancelled, or is not known any more
// (its records expired or were purged), is aborted at the store and its
// record removed. It returns how many it aborted.
//
// The handler aborts at once what it sees end: a permanent error, the
// task's last attempt, a cancel while it runs. Sweep is for the ends no
// handler sees: a task cancelled while it waits for a retry, a task
// dead-lettered after its worker crashed too often, a worker that died
// before it could abort. Run it now and then (RunSweeper) in one process
// per fleet, or more: two sweeps of the same upload abort it once and
// both remove its record. A bucket lifecycle rule
// (AbortIncompleteMultipartUpload after some days) is a second guard, for
// uploads whose record was lost with Redis.
//
// A sharded queue (client.DeclareShards) is swept whole: its plain queue
// and every shard; a shard's own name sweeps that shard.
//
// Uploads are aborted at the endpoint of the handler's S3Config.
func (h *Handler) Sweep(ctx context.Context, queues ...string) (aborted int, err error) {
	if h.rdb == nil {
		return 0, errors.New("upload: Sweep needs Config.Redis")
	}
	c, err := h.client(ctx)
	if err != nil {
		return 0, err
	}
	var errs []error
	var phys []string
	for _, qn := range queues {
		if err := keys.ValidatePhysicalQueue(qn); err != nil {
			return aborted, fmt.Errorf("upload: Sweep: %w", err)
		}
		phys = append(phys, qn)
		if keys.IsShard(qn) {
			continue
		}
		set, ok, err := store.Shards(ctx, h.rdb, qn)
		if err != nil {
			return aborted, fmt.Errorf("upload: Sweep: %w", err)
		}
		if ok {
			phys = append(phys, set.Names...)
		}
	}
	for _, qn := range phys {
		q := keys.ForQueue(qn)
		var all []string
		for start := int64(0); ; start += 1000 {
			ks, err := store.UploadTasks(ctx, h.rdb, q, start, 1000)
			if err != nil {
				return aborted, err
			}
			all = append(all, ks...)
			if len(ks) < 1000 {
				break
			}
		}
		for _, key := range all {
			hd, err := c.Task(qn + "/" + key)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			st, err := hd.State(ctx)
			switch {
			case errors.Is(err, client.ErrNotFound):
			case err != nil:
				errs = append(errs, err)
				continue
			case !st.Final():
				continue // running, or waiting for its next attempt
			}
			ok, err := h.sweepOne(ctx, q, key)
			if err != nil {
				errs = append(errs, err)
			}
			if ok {
				aborted++
			}
		}
	}
	return aborted, errors.Join(errs...)
}

// sweepOne removes the record of the task with key key of queue q, if the
// task is still ended or unknown (checked with the removal, in one call:
// a task put back by RetryDead since Sweep read its state keeps its record
// and its upload), and then aborts its upload. It reports whether it
// aborted one. An abort that fails leaves the upload to the bucket's
// lifecycle rule.
func (h *Handler) sweepOne(ctx context.Context, q keys.Queue, key string) (bool, error) {
	rec, found, err := store.UploadRead(ctx, h.rdb, q, key)
	if err != nil && !found {
		return false, err
	}
	if !found || rec.ID == "" {
		_, err := store.UploadEnd(ctx, h.rdb, q, key, rec.ID) // a listing without a record
		return false, err
	}
	if ok, err := store.UploadSweep(ctx, h.rdb, q, key, rec.ID); err != nil || !ok {
		return false, err
	}
	if rec.Bucket == "" || rec.Object == "" {
		return false, nil // a record too broken to name its upload
	}
	sc, err := h.conns.get(h.s3)
	if err != nil {
		return false, err
	}
	d := s3Dest{bucket: rec.Bucket, key: rec.Object}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err = h.call(ctx, rateKey("s3", sc.endpoint+"/"+d.bucket), func(ctx context.Context) error {
		return sc.core.AbortMultipartUpload(ctx, d.bucket, d.key, rec.ID)
	})
	if err != nil && !noSuchUpload(err) {
		return false, sc.s3Err("abort multipart upload", d, err)
	}
	return true, nil
}

// RunSweeper calls Sweep every interval until ctx ends (it then returns
// ctx's error); a pass's error is logged, and the next pass tries again.
func (h *Handler) RunSweeper(ctx context.Context, every time.Duration, queues ...string) error {
	if every <= 0 {
		return errors.New("upload: RunSweeper: the interval must be positive")
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := h.Sweep(ctx, queues...); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			h.log.Warn("upload: sweep", "aborted", n, "err", err)
		} else if n > 0 {
			h.log.Info("upload: sweep aborted the uploads of ended tasks", "aborted", n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// client is the handler's client of its Redis, made on first use (Sweep).
func (h *Handler) client(ctx context.Context) (*client.Client, error) {
	h.cmu.Lock()
	defer h.cmu.Unlock()
	if h.cl != nil {
		return h.cl, nil
	}
	c, err := client.New(ctx, h.rdb, &client.Config{Logger: h.log})
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	h.cl = c
	return c, nil
}
