-- partstep.lua: advances a partition (the tasks enqueued with one partition
-- key, listed in enqueue order). Only the head of the list is ever in the
-- stream, so tasks of one key run one at a time and in order; a task leaves
-- the head only once it has ended, so a task whose worker died runs again
-- (after its lease) before the next of its key. An end that complete.lua
-- does not step itself (see below), and every end recorded by cancel.lua,
-- writes an outbox entry naming its partition, and draining that entry runs
-- this script until it reports something other than 'again'.
-- A task started here records in its hash (field nx) the key of the task
-- behind it, if any: the outbox entry of its end names both (complete.lua),
-- so the drain can call with the two keys without reading the list first.
-- Its stream entry names its partition key (field pk, from its hash) and
-- that next task (nx) too: the worker that runs it hands both back with its
-- outcome, and complete.lua steps the partition itself when the list still
-- agrees (no outbox entry then).
-- The keys passed are only a guess the script checks against the list.
-- KEYS[1]  the partition's list, KEYS[2] and KEYS[3] the task hashes of the
--          first two tasks of the list as the caller read it (or as the
--          outbox entry named them), KEYS[4] the queue's stream, KEYS[5] its
--          stats hash (field pw counts the tasks waiting in a partition
--          behind its head: a task counted there, pc = 1 in its hash,
--          leaves the count as it starts)
-- ARGV[1], ARGV[2]  those two tasks' keys ('' for none)
-- Returns: 'empty' (no task left), 'busy' (the head has not ended),
-- 'started' (the head was waiting and is now in the stream), 'again' (the
-- list changed since the caller read it, or more ended tasks are to be
-- removed: read the list again and call again). When the first task is
-- gone already and the second heads the list, the second is stepped as the
-- head (another drain took the first off).
local function step(hk, key)
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then return 'empty' end
  if key == '' or head ~= key then return 'again' end
  local h = redis.call('HMGET', hk, 'st', 'm', 'pc', 'pk')
  local st = h[1]
  if st == 'waiting' and h[2] then
    local nx = redis.call('LINDEX', KEYS[1], 1)
    local f = {'m', h[2]}
    if h[4] then
      f[3], f[4] = 'pk', h[4]
      if nx then f[5], f[6] = 'nx', nx end
    end
    local id = redis.call('XADD', KEYS[4], '*', unpack(f))
    if nx then
      redis.call('HSET', hk, 'st', 'pending', 'e', id, 'nx', nx)
    else
      -- Nothing behind it: an nx from an earlier start (a retried dead
      -- task) would name a task no longer behind it.
      redis.call('HSET', hk, 'st', 'pending', 'e', id)
      redis.call('HDEL', hk, 'nx')
    end
    if h[3] then
      redis.call('HDEL', hk, 'm', 'pc')
      redis.call('HINCRBY', KEYS[5], 'pw', -1)
    else
      redis.call('HDEL', hk, 'm')
    end
    return 'started'
  end
  if st and st ~= 'dead' and st ~= 'cancelled' then return 'busy' end
  -- Ended: dead, cancelled, or succeeded (its record is then gone).
  redis.call('LPOP', KEYS[1])
  return 'popped'
end
local r = step(KEYS[2], ARGV[1])
if r == 'again' and ARGV[2] ~= '' and ARGV[2] ~= ARGV[1] and redis.call('LINDEX', KEYS[1], 0) == ARGV[2] then
  r = 'popped'
end
if r ~= 'popped' then return r end
r = step(KEYS[3], ARGV[2])
if r == 'popped' then return 'again' end
return r
