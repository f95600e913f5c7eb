-- shardcas.lua: replaces a sharded queue's registry entry only if it is
-- still the one the caller read; a resend finds its own entry and answers
-- as the first run did.
-- KEYS[1]  the shard registry (a hash: field = queue name)
-- ARGV[1]  the queue, ARGV[2] the entry the caller read, ARGV[3] the new one
-- Returns: 1 the entry is the new one (written now or by the first run of
-- this call), 0 it is neither (changed meanwhile or gone): nothing written.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur == ARGV[3] then return 1 end
if cur ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
