-- retrydead.lua: puts one dead task back into its queue's stream, or, for a
-- partitioned task, at the tail of its partition (it enters the stream when
-- the tasks of its key before it ended).
-- KEYS[1]  dead-letter sorted set, KEYS[2] the queue's stream, KEYS[3] task hash,
-- KEYS[4]  the queue's stats hash (field pw counts the tasks waiting in a
--          partition behind its head; its hash then gets pc = 1),
--          KEYS[5] the partition's list (only
--          with ARGV[4]); then, last, the task's progress hash
--          (keys.Queue.Progress: the dead run's report goes, or the new
--          first attempt's would be refused as older)
-- ARGV[1]  task key, ARGV[2] envelope for the new first attempt, ARGV[3] request nonce,
-- ARGV[4]  partition key or ''
-- Returns: 1 re-enqueued (also for a replay of this request), 0 the task is not dead.
if redis.call('HGET', KEYS[3], 'rq') == ARGV[3] then return 1 end
if redis.call('HGET', KEYS[3], 'st') ~= 'dead' then return 0 end
redis.call('HDEL', KEYS[3], 'm', 'err', 'fin', 'r', 'a', 'cx', 'e')
local pgk = KEYS[5]
if ARGV[4] ~= '' then pgk = KEYS[6] end
if pgk then redis.call('DEL', pgk) end
if ARGV[4] ~= '' and redis.call('LINDEX', KEYS[5], 0) == ARGV[1] then
  -- Its own death is not drained yet (it still heads its partition): take
  -- that entry out, or the retried task would start ahead of the next.
  redis.call('LPOP', KEYS[5])
end
if ARGV[4] ~= '' and redis.call('RPUSH', KEYS[5], ARGV[1]) > 1 then
  redis.call('HSET', KEYS[3], 'st', 'waiting', 'm', ARGV[2], 'rq', ARGV[3], 'pk', ARGV[4], 'pc', '1')
  redis.call('HINCRBY', KEYS[4], 'pw', 1)
else
  local id = redis.call('XADD', KEYS[2], '*', 'm', ARGV[2])
  redis.call('HSET', KEYS[3], 'st', 'pending', 'e', id, 'rq', ARGV[3])
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
