-- groupcancel.lua: asks a running group to end cancelled: its held members
-- are no longer released, and an outbox entry makes a drain cancel its open
-- members; the group ends 'cancelled' once they all ended.
-- KEYS[1]  group hash, KEYS[2] home queue's outbox
-- ARGV[1]  public group id, ARGV[2] reason
-- Returns: the group's state ('running' when the request was made now or
-- before; '' when unknown).
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return '' end
if st == 'running' then
  redis.call('HSET', KEYS[1], 'cx', '1')
  redis.call('XADD', KEYS[2], '*', 'x', ARGV[1], 'why', ARGV[2])
end
return st
