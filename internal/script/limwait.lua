-- limwait.lua: registers a task, parked because its limit was full, to be
-- woken when a slot frees; or reports that one is free already (a slot
-- freed between the failed take and the park), so the caller wakes it now.
-- KEYS[1]  holders, KEYS[2] waiters
-- ARGV[1]  the limit, ARGV[2] task id, ARGV[3] how long the waiters list
--          is kept without a change, ms
-- Returns: 1 a slot is free (not registered), 0 registered.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms())
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then return 1 end
redis.call('LREM', KEYS[2], 0, ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 0
