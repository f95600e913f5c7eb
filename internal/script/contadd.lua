-- contadd.lua: registers a continuation on a task, or, if the task has ended,
-- puts it straight into the outbox. One script decides, so a registration
-- racing the task's end is neither lost nor doubled.
-- KEYS[1]  task hash, KEYS[2] result key, KEYS[3] continuations of the task,
-- KEYS[4]  outbox, KEYS[5] the queue's hooks, KEYS[6] the queue's stream,
-- KEYS[7..10] for a batch item its batch's record, results hash, marked
--          set and item list
-- ARGV[1]  spec "<queue>/<key>|<only on success 1/0>", ARGV[2] task id,
-- ARGV[3]  for a batch item (patterns.Batch) its index, else ''
-- Returns: 'registered', 'fired' (the task had ended; drain the outbox), or
-- 'unknown' (no such task: nothing registered).
-- A replay (or a second registration of the same continuation) lists the
-- spec once; in the 'fired' case it may add a second outbox entry, which
-- activate.lua makes a no-op.
local st = redis.call('HGET', KEYS[1], 'st')
if redis.call('EXISTS', KEYS[2]) == 1 then st = 'succeeded' end
if not st and ARGV[3] ~= '' and redis.call('HEXISTS', KEYS[8], ARGV[3]) == 1 then st = 'succeeded' end
if st == 'succeeded' or st == 'dead' or st == 'cancelled' then
  redis.call('XADD', KEYS[4], '*', 's', ARGV[1], 'p', ARGV[2], 'st', st)
  return 'fired'
end
local inBatch = not st and ARGV[3] ~= '' and redis.call('EXISTS', KEYS[7]) == 1 and tonumber(ARGV[3]) < redis.call('LLEN', KEYS[10])
if not st and not inBatch then
  -- No record: only the first entry of an auto-keyed task, still in the
  -- stream, is a task here, and a batch item while its batch exists.
  local key = string.match(ARGV[2], '/(.*)$')
  if not (string.match(key, '^%d+%-%d+$') and redis.call('XRANGE', KEYS[6], key, key)[1]) then
    return 'unknown'
  end
end
if not redis.call('LPOS', KEYS[3], ARGV[1]) then redis.call('RPUSH', KEYS[3], ARGV[1]) end
-- The flag makes the record exist, and the hook makes the task's end look
-- for it, so the continuations fire.
redis.call('HSET', KEYS[1], 'k', '1')
if inBatch then redis.call('SADD', KEYS[9], ARGV[3]) end
redis.call('PERSIST', KEYS[1])
redis.call('ZADD', KEYS[5], '+inf', 'c:' .. ARGV[1])
return 'registered'
