-- batchabort.lua: ends the waiting items of a batch (patterns.Batch) that
-- ended without a run recording them: dead-lettered (its attempts used up,
-- a poison entry) or cancelled. Each item ends the same way with the same
-- reason; the batch's own record is deleted (out of the dead-letter store:
-- its items stand for it there).
-- KEYS[1]  dead-letter set, KEYS[2] outbox, KEYS[3] hooks, KEYS[4] the
--          batch's record, KEYS[5] its item list, KEYS[6] its cancelled set,
--          KEYS[7] its results hash, KEYS[8] its marked set
-- KEYS[9+2i], KEYS[10+2i] per item i: task hash, continuations
-- ARGV[1]  queue name, ARGV[2] done channel, ARGV[3] 'dead' or 'cancelled',
-- ARGV[4]  reason, ARGV[5] retention ms (cancelled items), ARGV[6] batch
--          key, ARGV[7] n, ARGV[8] the batch's last attempt; per item two
--          values: index, envelope (dead items keep it for RetryDead)
-- Returns: 1, or 2 when the outbox was written.
local now = now_ms()
local wrote = false
for i = 0, tonumber(ARGV[7]) - 1 do
  local idx, env = ARGV[9 + 2 * i], ARGV[10 + 2 * i]
  local key = ARGV[6] .. '.' .. idx
  local tk, ck = KEYS[9 + 2 * i], KEYS[10 + 2 * i]
  local f = redis.call('HMGET', tk, 'st', 'w', 'k')
  if not f[1] and redis.call('HEXISTS', KEYS[7], idx) == 0 then
    if ARGV[3] == 'dead' then
      redis.call('HSET', tk, 'st', 'dead', 'err', ARGV[4], 'fin', now, 'm', env, 'a', ARGV[8])
      redis.call('PERSIST', tk)
      redis.call('ZADD', KEYS[1], now, key)
    else
      redis.call('HSET', tk, 'st', 'cancelled', 'err', ARGV[4], 'fin', now, 'a', ARGV[8])
      redis.call('PEXPIRE', tk, ARGV[5])
    end
    redis.call('HDEL', tk, 'w')
    if f[3] and fire(ck, KEYS[2], KEYS[3], ARGV[1] .. '/' .. key, ARGV[3]) > 0 then wrote = true end
    if f[2] then redis.call('PUBLISH', ARGV[2], key) end
  end
end
redis.call('DEL', KEYS[5], KEYS[6], KEYS[8])
-- The batch's record goes too (a record left behind would make its
-- items, once theirs expire, look waiting again).
redis.call('ZREM', KEYS[1], ARGV[6])
redis.call('DEL', KEYS[4])
if wrote then return 2 end
return 1
