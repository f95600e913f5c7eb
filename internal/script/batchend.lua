-- batchend.lua: records the end of a batch run (patterns.Batch): each item's
-- own outcome, then the batch's entry acknowledged and its records deleted,
-- all fenced by the batch attempt's token like complete.lua. A succeeded
-- item's record is a field of the batch's results hash (written 1,000 at a
-- time; the record has the format of a result key); a dead item gets a task
-- record of its own in the dead-letter store. Only the items with a record
-- of their own (in the batch's marked set: watched, continued or cancelled)
-- and the dead ones are touched one by one, and only their keys are
-- declared: should the marked set hold an item the caller did not declare
-- (marked while the batch ran), the script writes nothing and names it, and
-- the caller calls again with its keys.
-- KEYS[1]  the queue's stream, KEYS[2] dead-letter set, KEYS[3] outbox,
-- KEYS[4]  hooks, KEYS[5] the batch's hash, KEYS[6] its item list, KEYS[7]
--          its cancelled set, KEYS[8] its results hash, KEYS[9] its marked set
-- KEYS[10+2j], KEYS[11+2j] per declared item j (0-based): task hash,
--          continuations
-- KEYS[10+2d], KEYS[11+2d] the queue's stats and history hashes
-- ARGV[1]  consumer group, ARGV[2] consumer, ARGV[3] entry id, ARGV[4]
--          delivery count, ARGV[5] done channel, ARGV[6] queue name,
-- ARGV[7]  attempt of the batch, ARGV[8] retention ms, ARGV[9] the batch's
--          key, ARGV[10] d, then d declared item indexes (KEYS order), then
--          s, then s pairs (index, result) of succeeded items, then x, then
--          x triples (index, error, envelope) of dead items (each declared)
-- Each item recorded counts as an attempt that ended (a dead one as a
-- failed one) in the queue's totals and history, and the acknowledged entry
-- in the count of those still in the stream.
-- Returns: {0} lease lost (nothing written), {1} recorded, {2} recorded
-- and the outbox written (drain it), or {3, index...}: marked items not
-- declared (nothing written; call again declaring them).
local stream, group, consumer, eid, dlv = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local p = redis.call('XPENDING', stream, group, eid, eid, 1)
if not (p[1] ~= nil and p[1][2] == consumer and tonumber(p[1][4]) == tonumber(dlv)) then
  return {0}
end
local a = 10
local decl = {}
for j = 0, tonumber(ARGV[a]) - 1 do
  decl[ARGV[a + 1 + j]] = j
end
local stats, hist = KEYS[10 + 2 * tonumber(ARGV[a])], KEYS[11 + 2 * tonumber(ARGV[a])]
a = a + 1 + tonumber(ARGV[a])
local missing = {3}
local marked = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[9])) do
  marked[m] = true
  if not decl[m] then missing[#missing + 1] = m end
end
if #missing > 1 then return missing end

local now = now_ms()
local head = 's\n' .. ARGV[7] .. '\n' .. now .. '\n' .. eid .. '/' .. consumer .. '/' .. dlv .. '\n'
local bkey = ARGV[9]
local wrote = false
-- ended tells a marked item's watchers and fires its continuations.
local function ended(idx, f, state)
  local j = decl[idx]
  local key = bkey .. '.' .. idx
  if f[3] and fire(KEYS[11 + 2 * j], KEYS[3], KEYS[4], ARGV[6] .. '/' .. key, state) > 0 then wrote = true end
  if f[2] then redis.call('PUBLISH', ARGV[5], key) end
end
local hs = {}
local ndead = 0
local s = tonumber(ARGV[a])
a = a + 1
for i = 0, s - 1 do
  local idx, data = ARGV[a + 2 * i], ARGV[a + 2 * i + 1]
  if marked[idx] then
    local tk = KEYS[10 + 2 * decl[idx]]
    local f = redis.call('HMGET', tk, 'st', 'w', 'k')
    if not f[1] then -- not ended meanwhile (cancelled)
      hs[#hs + 1], hs[#hs + 2] = idx, head .. data
      redis.call('DEL', tk)
      ended(idx, f, 'succeeded')
    end
  else
    hs[#hs + 1], hs[#hs + 2] = idx, head .. data
  end
end
a = a + 2 * s
for i = 0, tonumber(ARGV[a]) - 1 do
  local idx, err, env = ARGV[a + 1 + 3 * i], ARGV[a + 2 + 3 * i], ARGV[a + 3 + 3 * i]
  local tk = KEYS[10 + 2 * decl[idx]]
  local f = redis.call('HMGET', tk, 'st', 'w', 'k')
  if not f[1] then
    redis.call('HSET', tk, 'st', 'dead', 'err', err, 'a', ARGV[7], 'fin', now, 'm', env)
    redis.call('HDEL', tk, 'w')
    redis.call('PERSIST', tk)
    redis.call('ZADD', KEYS[2], now, bkey .. '.' .. idx)
    ndead = ndead + 1
    ended(idx, f, 'dead')
  end
end
-- In chunks: Lua's unpack takes a few thousand values at most.
for c = 1, #hs, 1000 do
  redis.call('HSET', KEYS[8], unpack(hs, c, math.min(c + 999, #hs)))
end
if #hs > 0 then redis.call('PEXPIRE', KEYS[8], ARGV[8]) end
count_ended(stats, hist, #hs / 2 + ndead, ndead, now)
redis.call('HINCRBY', stats, 'ack', redis.call('XACK', stream, group, eid))
redis.call('DEL', KEYS[5], KEYS[6], KEYS[7], KEYS[9])
if wrote then return {2} end
return {1}
