-- retrydead.lua: puts one dead task back into its queue's stream.
-- KEYS[1]  dead-letter sorted set, KEYS[2] the queue's stream, KEYS[3] task hash
-- ARGV[1]  task key, ARGV[2] envelope for the new first attempt, ARGV[3] request nonce
-- Returns: 1 re-enqueued (also for a replay of this request), 0 the task is not dead.
if redis.call('HGET', KEYS[3], 'rq') == ARGV[3] then return 1 end
if redis.call('HGET', KEYS[3], 'st') ~= 'dead' then return 0 end
local id = redis.call('XADD', KEYS[2], '*', 'm', ARGV[2])
redis.call('HSET', KEYS[3], 'st', 'pending', 'e', id, 'rq', ARGV[3])
redis.call('HDEL', KEYS[3], 'm', 'err', 'fin', 'r', 'a', 'cx')
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
