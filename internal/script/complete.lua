-- complete.lua: records the outcomes of a batch of attempts of one queue, each
-- fenced by its attempt token (entry id, consumer, delivery count), and acks them.
-- KEYS[1]  the queue's stream
-- KEYS[2]  scheduled sorted set (retry backoff, parked tasks)
-- KEYS[3]  dead-letter sorted set
-- KEYS[3+i] task hash of item i (1-based)
-- ARGV[1]  consumer group, ARGV[2] consumer name, ARGV[3] done channel, ARGV[4] n
-- ARGV[5..] per item 7 values: op, entry id, delivery count, task key, a1, a2, a3
--   op 's' succeeded: a1 result, a2 retention ms, a3 attempt
--   op 'r' retry:     a1 next envelope, a2 delay ms, a3 error text
--   op 'd' dead:      a1 envelope (or raw entry), a2 error text, a3 attempt
--   op 'p' park:      a1 next envelope, a2 delay ms (0: back into the stream now), a3 unused
-- Returns: n integers, 1 applied (also for a replay of this same call), 0 lease lost
-- (the entry is no longer pending under this consumer with this delivery count;
-- nothing was written for it).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stream, group, consumer, chan = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local n = tonumber(ARGV[4])

-- One ranged read of this consumer's pending entries covers the batch: ids
-- between the batch's lowest and highest. If the range holds more entries than
-- were asked for, items it did not return are checked one by one.
local lo, hi = nil, nil
local function less(a, b)
  local ams, aseq = string.match(a, '^(%d+)%-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)%-(%d+)$')
  ams, bms = tonumber(ams), tonumber(bms)
  return ams < bms or (ams == bms and tonumber(aseq) < tonumber(bseq))
end
for i = 0, n - 1 do
  local eid = ARGV[6 + 7 * i]
  if not lo or less(eid, lo) then lo = eid end
  if not hi or less(hi, eid) then hi = eid end
end
local owned = {}
local complete = true
if n > 0 then
  local limit = 4 * n + 64
  local rows = redis.call('XPENDING', stream, group, lo, hi, limit, consumer)
  for _, r in ipairs(rows) do owned[r[1]] = tonumber(r[4]) end
  complete = #rows < limit
end
local function holds(eid, dlv)
  local c = owned[eid]
  if c == nil and not complete then
    local p = redis.call('XPENDING', stream, group, eid, eid, 1)
    if p[1] and p[1][2] == consumer then c = tonumber(p[1][4]) end
  end
  return c ~= nil and c == tonumber(dlv)
end

local acks = {}
local res = {}
for i = 0, n - 1 do
  local b = 5 + 7 * i
  local op, eid, dlv, key = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local a1, a2, a3 = ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
  local tk = KEYS[4 + i]
  local token = eid .. '/' .. consumer .. '/' .. dlv
  if not holds(eid, dlv) then
    if redis.call('HGET', tk, 'x') == token then res[i + 1] = 1 else res[i + 1] = 0 end
  else
    owned[eid] = nil -- an id twice in one batch is applied once
    acks[#acks + 1] = eid
    res[i + 1] = 1
    -- A task with no record yet (the first attempt of an auto-keyed task)
    -- has no fields to clear and no watcher to tell.
    local fresh = redis.call('EXISTS', tk) == 0
    local notify = false
    if op == 's' then
      redis.call('HSET', tk, 'st', 'succeeded', 'r', a1, 'a', a3, 'fin', now, 'e', eid, 'x', token)
      if not fresh then redis.call('HDEL', tk, 'm', 'err') end
      redis.call('PEXPIRE', tk, a2)
      notify = true
    elseif op == 'r' then
      redis.call('HSET', tk, 'st', 'retrying', 'm', a1, 'err', a3, 'x', token)
      if not fresh then
        redis.call('HDEL', tk, 'e')
        redis.call('PERSIST', tk)
      end
      redis.call('ZADD', KEYS[2], now + tonumber(a2), key)
    elseif op == 'd' then
      redis.call('HSET', tk, 'st', 'dead', 'm', a1, 'err', a2, 'a', a3, 'fin', now, 'e', eid, 'x', token)
      if not fresh then redis.call('PERSIST', tk) end
      redis.call('ZADD', KEYS[3], now, key)
      notify = true
    elseif op == 'p' then
      if tonumber(a2) == 0 then
        local id = redis.call('XADD', stream, '*', 'm', a1)
        redis.call('HSET', tk, 'st', 'pending', 'e', id, 'x', token)
        if not fresh then redis.call('HDEL', tk, 'm') end
      else
        redis.call('HSET', tk, 'st', 'scheduled', 'm', a1, 'x', token)
        if not fresh then redis.call('HDEL', tk, 'e') end
        redis.call('ZADD', KEYS[2], now + tonumber(a2), key)
      end
      if not fresh then redis.call('PERSIST', tk) end
    else
      return redis.error_reply('complete.lua: unknown op ' .. tostring(op))
    end
    if notify and not fresh and redis.call('HDEL', tk, 'w') == 1 then
      redis.call('PUBLISH', chan, key)
    end
  end
end
if #acks > 0 then
  redis.call('XACK', stream, group, unpack(acks))
end
return res
