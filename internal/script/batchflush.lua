-- batchflush.lua: closes the open batch of a kind now (patterns.Batch's
-- Flush): it enters the stream with the items it has.
-- KEYS[1]  the kind's open-batch pointer, KEYS[2] the queue's stream,
-- KEYS[3]  scheduled set, KEYS[4] the hash of the batch the pointer named
--          when the caller read it
-- ARGV[1]  the pointer as read
-- Returns: 'again' (the pointer changed), 'flushed', or 'none' (no open
-- batch).
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return 'again' end
if cur == '' then return 'none' end
redis.call('DEL', KEYS[1])
if redis.call('HGET', KEYS[4], 'open') ~= '1' then return 'none' end
redis.call('ZREM', KEYS[3], cur)
local id = redis.call('XADD', KEYS[2], '*', 'm', redis.call('HGET', KEYS[4], 'm'))
redis.call('HSET', KEYS[4], 'st', 'pending', 'e', id)
redis.call('HDEL', KEYS[4], 'm', 'open')
return 'flushed'
