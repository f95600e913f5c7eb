-- repremove.lua: removes a repeat schedule from its queue, if its definition
-- still carries the token the caller found in the repeat index (a newer
-- declaration is left alone). Tasks it already enqueued stay. With a
-- marker key, a removal leaves the marker under the call's op id: a resend
-- finds it and answers 1 again (it would otherwise find the definition
-- gone and answer 0).
-- KEYS[1]  the queue's repeat set, KEYS[2] the definition hash, KEYS[3]
--          (optional) the marker of this call
-- ARGV[1]  name, ARGV[2] token ('' removes whatever is there), ARGV[3] how
--          long the marker lives (ms), with KEYS[3]
-- Returns: 1 when a schedule was removed, else 0.
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return 1 end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], 'tok') ~= ARGV[2] then return 0 end
local n = math.max(redis.call('ZREM', KEYS[1], ARGV[1]), redis.call('DEL', KEYS[2]))
if n == 1 and KEYS[3] then redis.call('SET', KEYS[3], '1', 'PX', ARGV[3]) end
return n
