-- state.lua: reads one task's state; optionally marks it watched so that its end
-- is published on the queue's done channel.
-- KEYS[1]  task hash, KEYS[2] the queue's stream, KEYS[3] result key
-- KEYS[4]  the queue's hooks, KEYS[5..8] for a batch item its batch's
--          record, results hash, marked set and item list
-- ARGV[1]  consumer group, ARGV[2] task key, ARGV[3] watcher id ('' to only
--          read), ARGV[4] how long the watcher's registration lasts, ms,
-- ARGV[5]  for a batch item (patterns.Batch) its index, else '': without a
--          record of its own it succeeded if its batch's results hold it,
--          and waits while its batch exists
-- With a watcher id, an unfinished task is marked watched (its end is
-- published) and the watcher registered in the hooks until now + ARGV[4]
-- (the caller renews it while it waits and removes it when done). A record
-- made only for the mark expires with the registration. This runs at
-- Redis' memory limit too (see below).
-- Returns: {state, entry id, attempt, result, error, envelope, finished ms,
-- delivery count}; state is '' when no such task is known (then nothing is marked).
-- 'running' is reported for a pending task whose entry a worker holds.
local f = redis.call('GET', KEYS[3])
if not f and ARGV[5] ~= '' then f = redis.call('HGET', KEYS[6], ARGV[5]) end
if f then
  local a, fin, eid, res = string.match(f, '^s\n([^\n]*)\n([^\n]*)\n([^/]*)/[^\n]*\n(.*)$')
  return {'succeeded', eid or '', a or '', res or '', '', '', fin or '', 0}
end
local h = redis.call('HMGET', KEYS[1], 'st', 'e', 'a', 'r', 'err', 'm', 'fin')
local st, eid, env = h[1], h[2], h[6]
if not st and string.match(ARGV[2], '^%d+%-%d+$') then
  eid = ARGV[2]
  st = 'pending'
end
local inBatch = false
if not st and ARGV[5] ~= '' and redis.call('EXISTS', KEYS[5]) == 1 and tonumber(ARGV[5]) < redis.call('LLEN', KEYS[8]) then
  st, inBatch = 'waiting', true
end
if not st then return {''} end
local dlv = 0
if st == 'pending' then
  local e = redis.call('XRANGE', KEYS[2], eid, eid)
  if not e[1] then
    if not h[1] then return {''} end
  else
    for j = 1, #e[1][2], 2 do
      if e[1][2][j] == 'm' then env = e[1][2][j + 1] end
    end
    local p = redis.call('XPENDING', KEYS[2], ARGV[1], eid, eid, 1)
    if p[1] then
      st = 'running'
      dlv = p[1][4]
    elseif not h[1] and delivered(KEYS[2], ARGV[1], eid) then
      -- Delivered and acked, and its record expired: the entry only waits
      -- to be trimmed.
      return {''}
    end
  end
end
if ARGV[3] ~= '' and st ~= 'succeeded' and st ~= 'dead' and st ~= 'cancelled' then
  local now = now_ms()
  local existed = redis.call('EXISTS', KEYS[1]) == 1
  -- The first write is one Redis over its maxmemory (noeviction) allows,
  -- and it frees memory: then the small writes after it run too, and a
  -- waiter can wait at the memory limit (Redis refuses a script whose
  -- first write may grow memory, and no later one).
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  redis.call('HSET', KEYS[1], 'w', '1')
  if inBatch then redis.call('SADD', KEYS[7], ARGV[5]) end
  if not existed or redis.call('PTTL', KEYS[1]) > 0 then
    -- A record made (or kept) only for watching expires with it; one that
    -- holds more (a continuation, a task's state) keeps its lifetime.
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
  end
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[4]), 'w:' .. ARGV[3])
end
return {st, eid or '', h[3] or '', h[4] or '', h[5] or '', env or '', h[7] or '', dlv}
