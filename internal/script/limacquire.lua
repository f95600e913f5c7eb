-- limacquire.lua: takes a slot of a fleet-wide concurrency limit for one
-- attempt, if one is free. Slots of holders whose lease ended (not renewed)
-- are free again. The set has no expiry: it empties (and so vanishes) as
-- its holders give their slots back or their leases end.
-- KEYS[1]  holders (sorted set scored by lease end, Unix ms), KEYS[2] waiters
--          (sorted set of task ids scored by when they parked)
-- ARGV[1]  the limit, ARGV[2] holder token, ARGV[3] lease ms, ARGV[4] the
--          task's id (taken off the waiters, should it be there from an
--          earlier park: a release must not spend a wake-up on it)
-- Returns: 1 taken (or already held by this token: renewed), 0 full.
-- Cost: O(log n) in the holders and waiters, besides the expired leases
-- it removes.
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[2]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[4])
  return 1
end
return 0
