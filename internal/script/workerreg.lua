-- workerreg.lua: registers a worker, or refreshes its registration: its
-- hash is written whole (every field, hb = Redis' now) and expires ARGV[2]
-- ms from now, and the index scores it by that expiry. Registrations that
-- expired are dropped from the index on the way. A resent call (or a stale
-- one arriving late) writes what a single call at that moment would: the
-- fields the worker sent and an expiry from Redis' now.
-- KEYS[1]  the worker's hash, KEYS[2] the index of workers
-- ARGV[1]  the worker's name, ARGV[2] how long the registration lasts, ms,
-- ARGV[3..] field, value pairs of the hash (hb excepted)
-- Returns: Redis' now, ms.
local now = now_ms()
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'hb', now, unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
return now
