-- limrelease.lua: gives back the slots of ended attempts and pops as many
-- waiters as there are free slots, for the caller to wake.
-- KEYS[1]  holders, KEYS[2] waiters
-- ARGV[1]  the limit, ARGV[2..] holder tokens
-- Returns: the task ids of the waiters to wake.
for i = 2, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms())
local free = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
local out = {}
while free > 0 do
  local id = redis.call('LPOP', KEYS[2])
  if not id then break end
  out[#out + 1] = id
  free = free - 1
end
return out
