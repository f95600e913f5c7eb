-- jointtl.lua: gives a ForkJoin's join the lifetime of its group while the
-- group is not sealed, and takes it back once it is (see
-- store.ExpireUnsealedJoin and store.KeepSealedJoin). The record's state is
-- read and acted on in one step, so a join that ends meanwhile keeps its
-- retention.
-- KEYS[1]  the join's task hash
-- ARGV[1]  'expire': set its lifetime to ARGV[2] ms while it is waiting;
--          'keep': remove its lifetime unless it ended (succeeded, dead,
--          cancelled)
-- ARGV[2]  the lifetime in ms (for 'expire')
-- Returns: 1 when the lifetime was set or removed, 0 when the record is
-- missing or not in the state looked for (left alone). Run twice, it leaves
-- the same state (an 'expire' replayed sets the same lifetime again).
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return 0 end
if ARGV[1] == 'expire' then
  if st ~= 'waiting' then return 0 end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if ARGV[1] == 'keep' then
  if st == 'succeeded' or st == 'dead' or st == 'cancelled' then return 0 end
  redis.call('PERSIST', KEYS[1])
  return 1
end
return redis.error_reply('jointtl.lua: unknown mode ' .. tostring(ARGV[1]))
