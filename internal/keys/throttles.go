package keys

// Issue 17: the keys the dashboard reads to show limits and rate buckets.

// RateBucket is the key of the rate limiter's bucket for key (package
// ratelimit writes it: "tat,last", µs of Redis time). It must match
// ratelimit.BucketKey.
func RateBucket(key string) string { return RatePrefix + key + "}" }

// RatePrefix starts every key of a rate bucket (the bucket, its turn
// schedule "<bucket>:wake", its op markers "<bucket>:op:<id>").
const RatePrefix = Prefix + ":{rl:"

// LimitPrefix starts every key of a fleet-wide concurrency limit (see
// ForLimit).
const LimitPrefix = Prefix + ":{lim:"

// ThrottleMatch is a SCAN pattern that matches every key of the limits and
// the rate buckets, and few others: "async:{l..." and "async:{r...".
const ThrottleMatch = Prefix + ":{[lr]*"
