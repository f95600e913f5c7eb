-- batchadd.lua: appends items to the open batch of a kind (patterns.Batch),
-- opening new batches as they fill. An open batch is a task in the
-- scheduled set, due MaxWait after its first item; it closes (enters the
-- stream) when it is due (forward.lua) or holds MaxSize items, or on a
-- flush. Items join only a batch still open (field open, cleared when it
-- first leaves the scheduled set or is cancelled: cancel.lua), in this one
-- script, so an item is never in two batches, a batch never changes once it
-- runs, and a cancelled batch never starts. A call leaves its reply under
-- its op marker (KEYS[6]) for the client's resend window: a resend returns
-- that reply and appends nothing.
-- An item is an entry of its batch's list (its msgpack); its task id is
-- "<batch key>.<index in the list>", and it has no record of its own until
-- it ends (or is cancelled, watched or continued).
-- KEYS[1]  the kind's open-batch pointer, KEYS[2] the queue's stream,
-- KEYS[3]  scheduled set, KEYS[4] and KEYS[5] the hash and item list of the
--          batch the pointer named as the caller guessed it, KEYS[6] the
--          marker of this append
-- KEYS[7+2j], KEYS[8+2j] hash and item list of new batch j (0-based),
--          should that many open
-- ARGV[1]  the pointer as guessed ('' none), ARGV[2] MaxSize, ARGV[3]
--          MaxWait ms, ARGV[4] and ARGV[5] a batch envelope's bytes before
--          and after its key (a msgpack string), ARGV[6] m, the number of
--          new batch keys, ARGV[7] how long the marker lives (ms: the
--          client's resend window and a margin), ARGV[8..7+m] the new batch
--          keys, then the items
-- Returns: {'again', the pointer} when the pointer is not what the caller
-- guessed, else {'ok', due ms of a batch opened here and still open or 0,
-- the pointer now ('' none), then per batch used: its key, the index of
-- the first item added, the number added}.
local prev = redis.call('GET', KEYS[6])
if prev then return cjson.decode(prev) end
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return {'again', cur} end
local max = tonumber(ARGV[2])
local m = tonumber(ARGV[6])
local out = {'ok', 0, ''}
local i, n = 8 + m, #ARGV
local function fill(bh, bl, bk)
  local have = redis.call('LLEN', bl)
  local take = math.min(max - have, n - i + 1)
  if take <= 0 then return end
  redis.call('RPUSH', bl, unpack(ARGV, i, i + take - 1))
  i = i + take
  out[#out + 1], out[#out + 2], out[#out + 3] = bk, have, take
  if have + take >= max then
    -- Full: it starts now.
    redis.call('ZREM', KEYS[3], bk)
    local id = redis.call('XADD', KEYS[2], '*', 'm', redis.call('HGET', bh, 'm'))
    redis.call('HSET', bh, 'st', 'pending', 'e', id)
    redis.call('HDEL', bh, 'm', 'open')
    redis.call('DEL', KEYS[1])
  end
end
local function mpstr(s)
  if #s < 32 then return string.char(0xa0 + #s) .. s end
  return string.char(0xd9, #s) .. s
end
if cur ~= '' and redis.call('HGET', KEYS[4], 'open') == '1' then
  fill(KEYS[4], KEYS[5], cur)
end
local j = 0
local due = 0
while i <= n do
  if j >= m then return redis.error_reply('batchadd.lua: more items than the new batches hold') end
  local bk, bh, bl = ARGV[8 + j], KEYS[7 + 2 * j], KEYS[8 + 2 * j]
  j = j + 1
  due = now_ms() + tonumber(ARGV[3])
  redis.call('HSET', bh, 'st', 'scheduled', 'm', ARGV[4] .. mpstr(bk) .. ARGV[5], 'open', '1')
  redis.call('ZADD', KEYS[3], due, bk)
  redis.call('SET', KEYS[1], bk)
  fill(bh, bl, bk)
  if redis.call('HGET', bh, 'open') ~= '1' then due = 0 end
end
out[2] = due
out[3] = redis.call('GET', KEYS[1]) or ''
redis.call('SET', KEYS[6], cjson.encode(out), 'PX', ARGV[7])
return out
