-- repmove.lua: the first step of moving a repeat schedule to another queue
-- (store.DeclareRepeat): stops it in the queue it leaves and hands over its
-- timing in one step. It leaves this queue's repeat set, so no coordinator
-- here fires a slot of it again, and the next fire it had is kept in its
-- definition (field 'held') and returned: the new queue starts there, past
-- every slot fired here, so no slot fires in both queues. Run again (a
-- resend, or a move retried after the caller died) it returns the same
-- timing. The definition itself is removed later by repremove.lua.
-- KEYS[1]  the queue's repeat set, KEYS[2] the definition hash
-- ARGV[1]  name, ARGV[2] the token the caller found in the repeat index
--          ('' takes whatever is there)
-- Returns: {} when no definition of that token is here (removed or declared
-- anew meanwhile: nothing done), else {timing digest, anchor ('' none),
-- next fire ms ('' none)}.
local d = redis.call('HMGET', KEYS[2], 'v', 'sch', 'anchor', 'held', 'tok')
if not d[1] or (ARGV[2] ~= '' and d[5] ~= ARGV[2]) then return {} end
local nxt = redis.call('ZSCORE', KEYS[1], ARGV[1])
if nxt then
  redis.call('HSET', KEYS[2], 'held', nxt)
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  nxt = d[4]
end
return {d[2] or '', d[3] or '', nxt or ''}
