-- limwait.lua: registers a task, parked because its limit was full, to be
-- woken when a slot frees; or reports that one is free already (a slot
-- freed between the failed take and the park), so the caller wakes it now.
-- A task registered already keeps its place (a resend, or a park again
-- after it came back by itself and found the limit still full).
-- KEYS[1]  holders, KEYS[2] waiters (sorted set of task ids scored by when
--          they parked, Unix ms)
-- ARGV[1]  the limit, ARGV[2] task id, ARGV[3] how long the waiters set is
--          kept without a change, ms
-- Returns: 1 a slot is free (not registered), 0 registered.
-- Cost: O(log n) in the waiters, besides the expired leases it removes.
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then return 1 end
redis.call('ZADD', KEYS[2], 'NX', now, ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 0
