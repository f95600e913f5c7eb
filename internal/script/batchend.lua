-- batchend.lua: records the end of a batch run (patterns.Batch): each item's
-- own outcome, then the batch's entry acknowledged and its records deleted,
-- all fenced by the batch attempt's token like complete.lua.
-- KEYS[1]  the queue's stream, KEYS[2] dead-letter set, KEYS[3] outbox,
-- KEYS[4]  hooks, KEYS[5] the batch's hash, KEYS[6] its item list, KEYS[7]
--          its set of cancelled item indexes
-- KEYS[8+3i..10+3i] per item i (0-based): task hash, result key, continuations
-- ARGV[1]  consumer group, ARGV[2] consumer, ARGV[3] entry id, ARGV[4]
--          delivery count, ARGV[5] done channel, ARGV[6] queue name,
-- ARGV[7]  attempt of the batch, ARGV[8] retention ms, ARGV[9] n; per item
--          four values: key, op ('s' succeeded: data is the result; 'd'
--          dead: data is the error), data, and for 'd' the item's envelope
--          (kept for RetryDead)
-- An item that has a record saying it ended (cancelled while the batch
-- ran) is left as it is; an item's record made only for a watcher or a
-- continuation (fields w, k) is read for them.
-- Returns: 0 lease lost (nothing written), 1 recorded, 2 recorded and the
-- outbox written (drain it).
local stream, group, consumer, eid, dlv = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local p = redis.call('XPENDING', stream, group, eid, eid, 1)
if not (p[1] ~= nil and p[1][2] == consumer and tonumber(p[1][4]) == tonumber(dlv)) then
  return 0
end
local now = now_ms()
local token = eid .. '/' .. consumer .. '/' .. dlv
local wrote = false
for i = 0, tonumber(ARGV[9]) - 1 do
  local key, op, data, env = ARGV[10 + 4 * i], ARGV[11 + 4 * i], ARGV[12 + 4 * i], ARGV[13 + 4 * i]
  local tk, fk, ck = KEYS[8 + 3 * i], KEYS[9 + 3 * i], KEYS[10 + 3 * i]
  local f = redis.call('HMGET', tk, 'st', 'w', 'k')
  if not f[1] then
    local state
    if op == 's' then
      redis.call('SET', fk, 's\n' .. ARGV[7] .. '\n' .. now .. '\n' .. token .. '\n' .. data, 'PX', ARGV[8])
      if f[2] or f[3] then redis.call('DEL', tk) end
      state = 'succeeded'
    else
      redis.call('HSET', tk, 'st', 'dead', 'err', data, 'a', ARGV[7], 'fin', now, 'm', env)
      redis.call('HDEL', tk, 'w')
      redis.call('PERSIST', tk)
      redis.call('ZADD', KEYS[2], now, key)
      state = 'dead'
    end
    if f[3] and fire(ck, KEYS[3], KEYS[4], ARGV[6] .. '/' .. key, state) > 0 then wrote = true end
    if f[2] then redis.call('PUBLISH', ARGV[5], key) end
  end
end
redis.call('XACK', stream, group, eid)
redis.call('DEL', KEYS[5], KEYS[6], KEYS[7])
if wrote then return 2 end
return 1
