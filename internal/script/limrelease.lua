-- limrelease.lua: gives back the slots of ended attempts and pops as many
-- waiters as there are free slots, longest waiting first, for the caller
-- to wake.
-- KEYS[1]  holders, KEYS[2] waiters (sorted set scored by when they parked)
-- ARGV[1]  the limit, ARGV[2..] holder tokens
-- Returns: the task ids of the waiters to wake.
-- Cost: O(log n) in the waiters for each one popped.
for i = 2, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms())
local free = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
local out = {}
if free > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], free)
  for i = 1, #popped, 2 do out[#out + 1] = popped[i] end
end
return out
