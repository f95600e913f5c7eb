-- repremove.lua: removes a repeat schedule from its queue. Tasks it already
-- enqueued are left alone.
-- KEYS[1]  the queue's repeat set, KEYS[2] the definition hash
-- ARGV[1]  name
-- Returns: 1 when the schedule existed, else 0.
local n = redis.call('ZREM', KEYS[1], ARGV[1])
return math.max(n, redis.call('DEL', KEYS[2]))
