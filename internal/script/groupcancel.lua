-- groupcancel.lua: asks a running group to end cancelled. From now on no
-- member is added (groupadd.lua and groupenq.lua refuse) and no held member
-- is released; the group is sealed here (its creator may be gone), and an
-- outbox entry makes a drain cancel its open members (a member never
-- created counts as cancelled). The group ends 'cancelled' once its members
-- have.
-- KEYS[1]  group hash, KEYS[2] open set, KEYS[3] home queue's outbox
-- ARGV[1]  public group id, ARGV[2] reason
-- Returns: the group's state ('running' when the request was made now or
-- before; '' when unknown).
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return '' end
if st == 'running' then
  redis.call('HSET', KEYS[1], 'cx', '1', 'sealed', '1')
  redis.call('SREM', KEYS[2], '~open')
  redis.call('XADD', KEYS[3], '*', 'x', ARGV[1], 'why', ARGV[2])
end
return st
