package inspect

import (
	"context"
	"slices"
	"time"

	"github.com/taskfleet/async/internal/store"
)

// LimitInfo is one fleet-wide concurrency limit (worker.Config.KindLimits,
// QueueLimits) as Redis shows it. Its size is configured in the workers
// and kept nowhere in Redis, so it is not shown.
type LimitInfo struct {
	Scope  string `json:"scope"`  // "kind:<kind>" or "queue:<queue>"
	InUse  int64  `json:"in_use"` // slots held by attempts whose lease has not ended
	Parked int64  `json:"parked"` // tasks parked until a slot frees
}

// RateInfo is one rate bucket (package ratelimit; worker.Config.RateLimits,
// RateKey, patterns.Throttle). The bucket keeps the time at which it is
// full again, not its rate, which only its users know: how many tokens it
// holds follows from the two.
type RateInfo struct {
	Key string `json:"key"`
	// FullAt is when the bucket is full again (Redis time); the bucket is
	// full now when it is not after the reading.
	FullAt time.Time `json:"full_at"`
	// Refill is how long from the reading until it is full: 0 when it is.
	Refill time.Duration `json:"refill_ns"`
}

// ThrottleInfo is what Throttles read.
type ThrottleInfo struct {
	At     time.Time   `json:"at"` // Redis time of the reading
	Limits []LimitInfo `json:"limits"`
	Rates  []RateInfo  `json:"rates"`
	// Complete is set when the key space was walked to its end (on every
	// master), so that every limit and bucket is listed; unset, only those
	// found among the first keys examined and those named after a queue
	// or a kind that a live worker serves are.
	Complete bool `json:"complete"`
}

// Throttles lists the fleet-wide concurrency limits that hold a slot or
// park a task, and the rate buckets that exist (a bucket expires once full
// again). They are found by the names they are likely to have
// ("queue:<queue>" for every queue, "kind:<kind>" for every kind a live
// worker handles) and by a SCAN of the key space bounded to about maxKeys
// keys per master (0 means 10000): cheap on any size of queue, complete on
// a server of fewer keys, and saying so in Complete.
func (i *Inspector) Throttles(ctx context.Context, maxKeys int) (ThrottleInfo, error) {
	if maxKeys <= 0 {
		maxKeys = 10000
	}
	now, err := store.Time(ctx, i.rdb)
	if err != nil {
		return ThrottleInfo{}, err
	}
	scopes, rates, complete, err := store.ThrottleScan(ctx, i.rdb, maxKeys)
	if err != nil {
		return ThrottleInfo{}, err
	}
	if !complete {
		qs, err := store.QueueNames(ctx, i.rdb)
		if err != nil {
			return ThrottleInfo{}, err
		}
		ws, err := store.Workers(ctx, i.rdb)
		if err != nil {
			return ThrottleInfo{}, err
		}
		for _, q := range qs {
			scopes = append(scopes, "queue:"+q)
			rates = append(rates, "queue:"+q)
		}
		for _, w := range ws {
			for _, k := range w.Kinds {
				scopes = append(scopes, "kind:"+k)
				rates = append(rates, "kind:"+k)
			}
		}
	}
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	slices.Sort(rates)
	rates = slices.Compact(rates)
	out := ThrottleInfo{At: now, Complete: complete, Limits: []LimitInfo{}, Rates: []RateInfo{}}
	ls, err := store.LimitUses(ctx, i.rdb, scopes, now.UnixMilli())
	if err != nil {
		return ThrottleInfo{}, err
	}
	for _, l := range ls {
		if l.InUse > 0 || l.Parked > 0 {
			out.Limits = append(out.Limits, LimitInfo{Scope: l.Scope, InUse: l.InUse, Parked: l.Parked})
		}
	}
	rs, err := store.RateStates(ctx, i.rdb, rates)
	if err != nil {
		return ThrottleInfo{}, err
	}
	for _, r := range rs {
		if !r.Found {
			continue
		}
		full := time.UnixMicro(r.TatUs)
		out.Rates = append(out.Rates, RateInfo{Key: r.Key, FullAt: full, Refill: max(full.Sub(now), 0)})
	}
	return out, nil
}
