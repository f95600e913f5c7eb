-- batchflush.lua: closes the open batch of a kind now (patterns.Batch's
-- Flush): it enters the stream with the items it has. A flush leaves a
-- marker under the call's op id: a resend finds it and answers 'flushed'
-- again (it would otherwise find the pointer gone and answer 'again').
-- KEYS[1]  the kind's open-batch pointer, KEYS[2] the queue's stream,
-- KEYS[3]  scheduled set, KEYS[4] the hash of the batch the pointer named
--          when the caller read it, KEYS[5] the marker of this flush
-- ARGV[1]  the pointer as read, ARGV[2] how long the marker lives (ms: the
--          client's resend window and a margin)
-- Returns: 'again' (the pointer changed), 'flushed', or 'none' (no open
-- batch).
if redis.call('EXISTS', KEYS[5]) == 1 then return 'flushed' end
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return 'again' end
if cur == '' then return 'none' end
redis.call('DEL', KEYS[1])
if redis.call('HGET', KEYS[4], 'open') ~= '1' then return 'none' end
redis.call('ZREM', KEYS[3], cur)
local id = redis.call('XADD', KEYS[2], '*', 'm', redis.call('HGET', KEYS[4], 'm'))
redis.call('HSET', KEYS[4], 'st', 'pending', 'e', id)
redis.call('HDEL', KEYS[4], 'm', 'open')
redis.call('SET', KEYS[5], '1', 'PX', ARGV[2])
return 'flushed'
