-- wake.lua: moves one scheduled task into its queue's stream now, ahead of
-- its due time (a task parked for a fleet-wide limit whose slot freed).
-- KEYS[1]  scheduled sorted set, KEYS[2] the queue's stream, KEYS[3] task hash,
-- KEYS[4]  the scheduled set's held index, KEYS[5] its retrying index
-- ARGV[1]  task key
-- Returns: 1 moved, 0 not scheduled (already moved, or not parked yet).
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local env = redis.call('HGET', KEYS[3], 'm')
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
if not env then return 0 end
local id = redis.call('XADD', KEYS[2], '*', 'm', env)
redis.call('HSET', KEYS[3], 'st', 'pending', 'e', id)
redis.call('HDEL', KEYS[3], 'm')
return 1
