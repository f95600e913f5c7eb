-- repdeclare.lua: declares (or updates) a repeat schedule in the queue its
-- tasks go to. Declaring the same definition again changes nothing, so every
-- process may declare its schedules at boot.
-- KEYS[1]  the queue's repeat set (name → next fire, Unix ms), KEYS[2] the
--          schedule's definition hash
-- ARGV[1]  name, ARGV[2] version (a digest of the whole definition),
-- ARGV[3]  task envelope without a key, ARGV[4] interval ms (0 for cron),
-- ARGV[5]  cron expression, ARGV[6] time zone, ARGV[7] task kind,
-- ARGV[8]  first fire ms for a cron schedule (computed by the caller),
-- ARGV[9]  the schedule's own digest (interval or cron and zone),
-- ARGV[10] a token for a new definition (the repeat index names a schedule
--          by queue and token, so a removal never deletes a newer one),
-- ARGV[11], ARGV[12] anchor and next fire carried over from the queue the
--          schedule moves from ('' when none), as repmove.lua handed them
--          over there (the old queue fires no slot from then on)
-- ARGV[13] the declaring call's op id: a definition this script wrote
--          keeps it and what it answered (fields 'op', 'opst'), so a resend
--          (or a later round of the same call) answers that again while the
--          definition is the one it wrote
-- Returns: {0 unchanged | 1 created | 2 updated, next fire ms, token}
-- A new schedule, or one whose timing changed, fires first one interval
-- from now (Redis time) or at the next cron time; an update that keeps the
-- timing keeps the next fire.
local name = ARGV[1]
local cur = redis.call('HMGET', KEYS[2], 'v', 'sch', 'tok', 'op', 'opst')
local nxt = redis.call('ZSCORE', KEYS[1], name)
if cur[4] == ARGV[13] and nxt then return {tonumber(cur[5]), tonumber(nxt), cur[3]} end
if cur[1] == ARGV[2] and nxt then return {0, tonumber(nxt), cur[3]} end
local status, tok = 2, cur[3]
if not cur[1] then
  status, tok = 1, ARGV[10]
end
redis.call('HSET', KEYS[2], 'v', ARGV[2], 'env', ARGV[3], 'every', ARGV[4], 'cron', ARGV[5],
  'tz', ARGV[6], 'kind', ARGV[7], 'sch', ARGV[9], 'tok', tok, 'at', now_ms(), 'op', ARGV[13], 'opst', status)
-- Declared here again after a move away was begun (repmove.lua): it lives
-- here; what the move held is stale.
redis.call('HDEL', KEYS[2], 'held')
if cur[2] ~= ARGV[9] or not nxt then
  local every = tonumber(ARGV[4])
  if ARGV[12] ~= '' then
    nxt = tonumber(ARGV[12])
    if ARGV[11] ~= '' then redis.call('HSET', KEYS[2], 'anchor', ARGV[11]) end
  elseif every > 0 then
    local now = now_ms()
    nxt = now + every
    redis.call('HSET', KEYS[2], 'anchor', now)
  else
    nxt = tonumber(ARGV[8])
  end
  redis.call('ZADD', KEYS[1], nxt, name)
end
return {status, tonumber(nxt), tok}
