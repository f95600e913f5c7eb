-- waiting.lua: creates a continuation in its own queue, waiting for its
-- parent (it enters the stream when activate.lua runs). A resend of the call
-- that created it (same op id) answers as that call did.
-- KEYS[1]  task hash, KEYS[2] result key
-- ARGV[1]  envelope, ARGV[2] op id of this call (a resend carries the same)
-- Returns: 1 created by this call, 0 a task with this key existed before
-- (nothing changed).
local h = redis.call('HMGET', KEYS[1], 'st', 'wo')
if h[1] then
  if h[1] == 'waiting' and h[2] == ARGV[2] then return 1 end
  return 0
end
if redis.call('EXISTS', KEYS[2]) > 0 then return 0 end
redis.call('HSET', KEYS[1], 'st', 'waiting', 'm', ARGV[1], 'wo', ARGV[2])
return 1
