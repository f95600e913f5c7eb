-- groupnew.lua: creates a group (fork/join, InvokeAll) in its home queue's
-- slot, open (the sentinel member "~open" keeps it from ending) until
-- groupend.lua seals it once every member was added and enqueued.
-- KEYS[1]  group hash, KEYS[2] its open-member set, KEYS[3] the home
--          queue's index of groups (inspect.Groups)
-- ARGV[1]  number of members, ARGV[2] '1' fail fast, ARGV[3] InvokeAll limit
--          (0: none), ARGV[4] retention ms, ARGV[5] public id of the group
--          this one is a member of (''), ARGV[6] its member name there,
--          ARGV[7] how long a group never sealed is kept, ms (its creator
--          failed and nobody completed the call), ARGV[8] nonce: the
--          incarnation its members' derived keys carry, ARGV[9] the
--          group's own id, ARGV[10] how many groups the index keeps (the
--          newest; readers drop the ids of groups that expired)
-- Returns: {'new' | 'open' (it exists and was never sealed: a call that
-- failed halfway, to be completed) | 'sealed' (it exists, complete), the
-- group's nonce}.
local h = redis.call('HMGET', KEYS[1], 'st', 'sealed', 'nc')
if h[1] then
  if h[2] == '1' then return {'sealed', h[3] or ''} end
  return {'open', h[3] or ''}
end
-- One reading of the clock for the record and the index: two could fall in
-- different milliseconds, and the pages list groups in the index's order
-- while showing the record's time.
local at = now_ms()
redis.call('HSET', KEYS[1], 'st', 'running', 'n', ARGV[1], 'ok', 0, 'bad', 0,
  'ff', ARGV[2], 'lim', ARGV[3], 'free', ARGV[3], 'ret', ARGV[4],
  'pg', ARGV[5], 'pm', ARGV[6], 'at', at, 'nc', ARGV[8])
redis.call('SADD', KEYS[2], '~open')
redis.call('ZADD', KEYS[3], at, ARGV[9])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[10]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return {'new', ARGV[8]}
