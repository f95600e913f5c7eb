-- waiting.lua: creates a continuation in its own queue, waiting for its
-- parent (it enters the stream when activate.lua runs).
-- KEYS[1]  task hash, KEYS[2] result key
-- ARGV[1]  envelope
-- Returns: 1 created, 0 a task with this key exists (nothing changed).
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('HSET', KEYS[1], 'st', 'waiting', 'm', ARGV[1])
return 1
