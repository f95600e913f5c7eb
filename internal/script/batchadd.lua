-- batchadd.lua: appends items to the open batch of a kind (patterns.Batch).
-- An open batch is a task in the scheduled set, due MaxWait after its first
-- item; it closes (enters the stream) when it is due (forward.lua) or holds
-- MaxSize items, or on a flush. Items join only a batch still scheduled, in
-- this one script, so an item is never in two batches and a batch never
-- changes once it runs. An item is an entry of its batch's list (its
-- msgpack); its task id is "<batch key>.<index in the list>", and it has no
-- record of its own until it ends (or is cancelled, watched or continued).
-- KEYS[1]  the kind's open-batch pointer, KEYS[2] the queue's stream,
-- KEYS[3]  scheduled set, KEYS[4] and KEYS[5] the hash and item list of the
--          batch the pointer named when the caller read it, KEYS[6] and
--          KEYS[7] the hash and item list of a new batch, should one open,
-- KEYS[8]  the marker of this append (a resend returns the first answer)
-- ARGV[1]  the pointer as read ('' none), ARGV[2] the new batch's key,
-- ARGV[3]  the new batch's envelope, ARGV[4] MaxSize, ARGV[5] MaxWait ms,
-- ARGV[6..] the items (at most MaxSize: they fit the open batch and a new one)
-- Returns: {'again'} when the pointer changed since the caller read it, else
-- {'ok', due ms of a batch opened here or 0, then per batch used: its key,
-- the index of the first item added, the number added}.
local prev = redis.call('GET', KEYS[8])
if prev then return cjson.decode(prev) end
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return {'again'} end
local max = tonumber(ARGV[4])
local out = {'ok', 0}
local i, n = 6, #ARGV
local function fill(bh, bl, bk)
  local have = redis.call('LLEN', bl)
  local take = math.min(max - have, n - i + 1)
  if take <= 0 then return false end
  redis.call('RPUSH', bl, unpack(ARGV, i, i + take - 1))
  i = i + take
  out[#out + 1], out[#out + 2], out[#out + 3] = bk, have, take
  if have + take >= max then
    -- Full: it starts now.
    redis.call('ZREM', KEYS[3], bk)
    local id = redis.call('XADD', KEYS[2], '*', 'm', redis.call('HGET', bh, 'm'))
    redis.call('HSET', bh, 'st', 'pending', 'e', id, 'n', have + take)
    redis.call('HDEL', bh, 'm')
    redis.call('DEL', KEYS[1])
  else
    redis.call('HSET', bh, 'n', have + take)
  end
  return true
end
if cur ~= '' and redis.call('HGET', KEYS[4], 'st') == 'scheduled' then
  fill(KEYS[4], KEYS[5], cur)
end
if i <= n then
  local due = now_ms() + tonumber(ARGV[5])
  redis.call('HSET', KEYS[6], 'st', 'scheduled', 'm', ARGV[3])
  redis.call('ZADD', KEYS[3], due, ARGV[2])
  redis.call('SET', KEYS[1], ARGV[2])
  out[2] = due
  fill(KEYS[6], KEYS[7], ARGV[2])
  if i <= n then return redis.error_reply('batchadd.lua: more items than fit two batches') end
end
redis.call('SET', KEYS[8], cjson.encode(out), 'PX', 10000)
return out
