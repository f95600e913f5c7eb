-- forward.lua: moves scheduled tasks whose due time has come (by Redis TIME) into
-- the stream. Safe to run from many processes at once: a task moves only while
-- it is still in the scheduled set, and leaves the set in the same step.
-- KEYS[1]  scheduled sorted set, KEYS[2] the queue's stream, KEYS[3] and
--          KEYS[4] its retrying and held indexes (a task leaves them with it)
-- KEYS[4+i] task hash of candidate i
-- ARGV[i]  task key of candidate i (candidates come from a read of the set's head)
-- Returns: {moved count, next due ms or -1, Redis now ms}
local now = now_ms()
local moved = 0
for i = 1, #ARGV do
  local key, tk = ARGV[i], KEYS[4 + i]
  local s = redis.call('ZSCORE', KEYS[1], key)
  if s and tonumber(s) <= now then
    local env = redis.call('HGET', tk, 'm')
    if env then
      local id = redis.call('XADD', KEYS[2], '*', 'm', env)
      redis.call('HSET', tk, 'st', 'pending', 'e', id)
      redis.call('HDEL', tk, 'm', 'open') -- open: a batch takes no more items
      moved = moved + 1
    end
    redis.call('ZREM', KEYS[1], key)
    redis.call('ZREM', KEYS[3], key)
    redis.call('ZREM', KEYS[4], key)
  end
end
local nx = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local nextDue = -1
if nx[2] then nextDue = tonumber(nx[2]) end
return {moved, nextDue, now}
