-- batchadd.lua: appends items to the open batch of a kind (patterns.Batch).
-- An open batch is a task in the scheduled set, due MaxWait after its first
-- item; it closes (enters the stream) when it is due (forward.lua) or holds
-- MaxSize items, or on a flush. An item joins only a batch still
-- scheduled, in the same step, so it is never in two batches and a batch is
-- never split. An item is a task record of its own (state waiting, field b:
-- its batch), so its handle works like any task's.
-- KEYS[1]  the kind's open-batch pointer, KEYS[2] the queue's stream,
-- KEYS[3]  scheduled set, KEYS[4] and KEYS[5] the hash and item list of the
--          batch the pointer named when the caller read it, KEYS[6] and
--          KEYS[7] the hash and item list of a new batch, should one open
-- KEYS[8..] per item its task hash
-- ARGV[1]  the pointer as read ('' none), ARGV[2] the new batch's key,
-- ARGV[3]  the new batch's envelope, ARGV[4] MaxSize, ARGV[5] MaxWait ms,
-- ARGV[6]  n; per item two values: key, envelope
-- (at most MaxSize items per call, so they fit the open batch and one new.)
-- Returns: {'again'} when the pointer changed since the caller read it, else
-- {'ok', due ms of a batch opened here or 0, then per item its batch key}.
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return {'again'} end
local now = now_ms()
local max = tonumber(ARGV[4])
local bh, bl, bk = nil, nil, nil
if cur ~= '' and redis.call('HGET', KEYS[4], 'st') == 'scheduled' and redis.call('LLEN', KEYS[5]) < max then
  bh, bl, bk = KEYS[4], KEYS[5], cur
end
local opened, usedNew = 0, false
local out = {'ok', 0}
for i = 0, tonumber(ARGV[6]) - 1 do
  local ik, env = ARGV[7 + 2 * i], ARGV[8 + 2 * i]
  local hk = KEYS[8 + i]
  if not bh then
    if usedNew then return redis.error_reply('batchadd.lua: more items than fit two batches') end
    usedNew = true
    bh, bl, bk = KEYS[6], KEYS[7], ARGV[2]
    opened = now + tonumber(ARGV[5])
    redis.call('HSET', bh, 'st', 'scheduled', 'm', ARGV[3])
    redis.call('ZADD', KEYS[3], opened, bk)
    redis.call('SET', KEYS[1], bk)
  end
  if redis.call('EXISTS', hk) == 0 then
    redis.call('HSET', hk, 'st', 'waiting', 'm', env, 'b', bk)
    redis.call('RPUSH', bl, ik)
  end
  out[#out + 1] = bk
  if redis.call('LLEN', bl) >= max then
    -- Full: it closes now.
    redis.call('ZREM', KEYS[3], bk)
    local id = redis.call('XADD', KEYS[2], '*', 'm', redis.call('HGET', bh, 'm'))
    redis.call('HSET', bh, 'st', 'pending', 'e', id)
    redis.call('HDEL', bh, 'm')
    redis.call('DEL', KEYS[1])
    bh, bl, bk = nil, nil, nil
  end
end
out[2] = opened
return out
