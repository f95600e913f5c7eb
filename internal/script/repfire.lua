-- repfire.lua: fires due slots of repeat schedules, each exactly once however
-- many coordinators try: a slot fires only while the schedule's next fire
-- still equals the time the caller read (compare-and-set), and firing moves
-- it to the following slot in the same step. The task's key derives from
-- the schedule and the slot, and an existing task of that key is never
-- replaced.
-- KEYS[1]  the queue's repeat set, KEYS[2] the queue's stream
-- KEYS[3i..3i+2] for item i (0-based, +3): its definition hash, the slot's
--          task hash and result key
-- ARGV[1]  n; per item seven values: name, definition version read, next
--          fire read (ms), task key ('' only moves the schedule on), envelope,
--          the slot after this one (ms), the slot itself (ms)
-- Returns: per item the key of the task it enqueued, '' for none, or
-- 'early' when the slot is later than Redis' now (the caller's clock runs
-- ahead: nothing was done); then the earliest next fire left in the set
-- (ms, or -1).
local now = now_ms()
local out = {}
for i = 0, tonumber(ARGV[1]) - 1 do
  local a = 2 + 7 * i
  local name, ver, seen, key, env, nxt = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local slot = tonumber(ARGV[a + 6])
  local dk, tk, fk = KEYS[3 + 3 * i], KEYS[4 + 3 * i], KEYS[5 + 3 * i]
  local s = redis.call('ZSCORE', KEYS[1], name)
  local r = ''
  if slot > now then
    r = 'early'
  elseif s and tonumber(s) == seen and seen <= now then
    local v = redis.call('HGET', dk, 'v')
    if not v then
      redis.call('ZREM', KEYS[1], name) -- removed meanwhile
    elseif v == ver then
      if key ~= '' and redis.call('EXISTS', tk, fk) == 0 then
        local id = redis.call('XADD', KEYS[2], '*', 'm', env)
        redis.call('HSET', tk, 'st', 'pending', 'e', id)
        redis.call('HSET', dk, 'last', key, 'lastat', now)
        redis.call('HINCRBY', dk, 'fired', 1)
        r = key
      end
      redis.call('ZADD', KEYS[1], nxt, name)
    end
    -- else: updated since the caller read it; the next pass reads it again
  end
  out[#out + 1] = r
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
out[#out + 1] = head[2] or '-1'
return out
