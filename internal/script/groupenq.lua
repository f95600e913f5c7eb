-- groupenq.lua: enqueues one chunk of a group's members into the group's
-- home queue, each added to the group's open set in the same step. This is
-- ForkJoin's path for members that live in the group's own queue: they are
-- auto-keyed tasks (no task hash), and the stream entry names their group
-- (field g) for a cancel that finds them there. The chunk's submission
-- indices and entry ids are recorded in one field of the group hash,
-- "e:<chunk>" = "<i>,<i>,...;<id>,<id>,...", which also marks it done.
-- KEYS[1]  the queue's stream, KEYS[2] group hash, KEYS[3] open set
-- ARGV[1]  chunk number, ARGV[2] public group id, ARGV[3] queue name,
-- ARGV[4..] per member two values: submission index, envelope
-- Returns: the members' entry ids in order; {} when this chunk was
-- enqueued before (a replay, or a second call completing one that failed
-- halfway: its record says where they went); {'!<state>'} when the group
-- has ended or is being cancelled (nothing was added).
local h = redis.call('HMGET', KEYS[2], 'st', 'cx')
local st = h[1]
if st ~= 'running' then return {'!' .. (st or 'unknown')} end
if h[2] then return {'!cancelling'} end
local field = 'e:' .. ARGV[1]
if redis.call('HEXISTS', KEYS[2], field) == 1 then return {} end
local ids, idx = {}, {}
local prefix = ARGV[3] .. '/'
for i = 4, #ARGV, 2 do
  local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[i + 1], 'g', ARGV[2])
  redis.call('SADD', KEYS[3], prefix .. id)
  ids[#ids + 1] = id
  idx[#idx + 1] = ARGV[i]
end
redis.call('HSET', KEYS[2], field, table.concat(idx, ',') .. ';' .. table.concat(ids, ','))
return ids
