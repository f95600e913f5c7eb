-- batchend.lua: records the end of a batch run (patterns.Batch): each item's
-- own outcome, then the batch's entry acknowledged and its records deleted,
-- all fenced by the batch attempt's token like complete.lua. A succeeded
-- item's record is a field of the batch's results hash (one HSET for the
-- batch; the record has the format of a result key), a dead item gets a
-- task record of its own in the dead-letter store. Only items in the
-- batch's marked set (watched, continued or cancelled: they have a record
-- of their own) are looked at one by one.
-- KEYS[1]  the queue's stream, KEYS[2] dead-letter set, KEYS[3] outbox,
-- KEYS[4]  hooks, KEYS[5] the batch's hash, KEYS[6] its item list, KEYS[7]
--          its cancelled set, KEYS[8] its results hash, KEYS[9] its marked set
-- KEYS[10+2i], KEYS[11+2i] per item i (0-based): task hash, continuations
-- ARGV[1]  consumer group, ARGV[2] consumer, ARGV[3] entry id, ARGV[4]
--          delivery count, ARGV[5] done channel, ARGV[6] queue name,
-- ARGV[7]  attempt of the batch, ARGV[8] retention ms, ARGV[9] n, ARGV[10]
--          the batch's key; per item four values: index, op ('s'
--          succeeded: data is the result; 'd' dead: data is the error),
--          data, and for 'd' the item's envelope (kept for RetryDead)
-- Returns: 0 lease lost (nothing written), 1 recorded, 2 recorded and the
-- outbox written (drain it).
local stream, group, consumer, eid, dlv = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local p = redis.call('XPENDING', stream, group, eid, eid, 1)
if not (p[1] ~= nil and p[1][2] == consumer and tonumber(p[1][4]) == tonumber(dlv)) then
  return 0
end
local now = now_ms()
local head = 's\n' .. ARGV[7] .. '\n' .. now .. '\n' .. eid .. '/' .. consumer .. '/' .. dlv .. '\n'
local marked = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[9])) do marked[m] = true end
local bkey = ARGV[10]
local wrote = false
local hs = {}
for i = 0, tonumber(ARGV[9]) - 1 do
  local idx, op, data, env = ARGV[11 + 4 * i], ARGV[12 + 4 * i], ARGV[13 + 4 * i], ARGV[14 + 4 * i]
  local tk, ck = KEYS[10 + 2 * i], KEYS[11 + 2 * i]
  local f = nil
  if marked[idx] then f = redis.call('HMGET', tk, 'st', 'w', 'k') end
  if not (f and f[1]) then
    local key = bkey .. '.' .. idx
    local state
    if op == 's' then
      hs[#hs + 1] = idx
      hs[#hs + 1] = head .. data
      if f then redis.call('DEL', tk) end
      state = 'succeeded'
    else
      redis.call('HSET', tk, 'st', 'dead', 'err', data, 'a', ARGV[7], 'fin', now, 'm', env)
      redis.call('HDEL', tk, 'w')
      redis.call('PERSIST', tk)
      redis.call('ZADD', KEYS[2], now, key)
      state = 'dead'
    end
    if f and f[3] and fire(ck, KEYS[3], KEYS[4], ARGV[6] .. '/' .. key, state) > 0 then wrote = true end
    if f and f[2] then redis.call('PUBLISH', ARGV[5], key) end
  end
end
-- In chunks: Lua's unpack takes a few thousand values at most.
for c = 1, #hs, 1000 do
  redis.call('HSET', KEYS[8], unpack(hs, c, math.min(c + 999, #hs)))
end
if #hs > 0 then redis.call('PEXPIRE', KEYS[8], ARGV[8]) end
redis.call('XACK', stream, group, eid)
redis.call('DEL', KEYS[5], KEYS[6], KEYS[7], KEYS[9])
if wrote then return 2 end
return 1
