-- duemark.lua: records that a queue has a task due at a time, in the index
-- coordinators sleep on, if that is earlier than what the index holds; and
-- counts the mark in the queue's generation, so that a coordinator that
-- read the queue's tasks before this mark does not then raise or drop its
-- entry (dueupdate.lua).
-- The generation is "<count>|<op id>|<answer>": the mark's op id makes a
-- resend of it (go-redis after a lost reply) count nothing again and give
-- the first run's answer, so the caller still wakes the coordinators when
-- that run moved the entry. A generation is only ever compared whole, and
-- a newer mark of the queue replaces it (a resend after that marks anew:
-- the newer mark woke the coordinators if it moved the entry).
-- KEYS[1]  the due index (sorted set: queue → earliest due, Unix ms),
-- KEYS[2]  the generations (hash: queue → generation)
-- ARGV[1]  queue name, ARGV[2] due ms, ARGV[3] the mark's op id (unique
--          per call, without '|')
-- Returns: 1 when the queue's entry moved earlier (wake the coordinators),
-- else 0.
local g = redis.call('HGET', KEYS[2], ARGV[1]) or '0'
local n, op, answer = string.match(g, '^(%d+)|([^|]*)|(%d)$')
if op and op == ARGV[3] then return tonumber(answer) end
n = tonumber(n or g) or 0
answer = 0
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not cur or tonumber(cur) > tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  answer = 1
end
redis.call('HSET', KEYS[2], ARGV[1], (n + 1) .. '|' .. ARGV[3] .. '|' .. answer)
return answer
