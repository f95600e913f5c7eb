-- repremove.lua: removes a repeat schedule from its queue, if its definition
-- still carries the token the caller found in the repeat index (a newer
-- declaration is left alone). Tasks it already enqueued stay.
-- KEYS[1]  the queue's repeat set, KEYS[2] the definition hash
-- ARGV[1]  name, ARGV[2] token ('' removes whatever is there)
-- Returns: 1 when a schedule was removed, else 0.
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], 'tok') ~= ARGV[2] then return 0 end
local n = redis.call('ZREM', KEYS[1], ARGV[1])
return math.max(n, redis.call('DEL', KEYS[2]))
