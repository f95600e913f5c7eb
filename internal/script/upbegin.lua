-- upbegin.lua: records the multipart upload a task began (package upload),
-- unless the task has one recorded already: two attempts that race keep the
-- first one's upload, and the other aborts its own.
-- KEYS[1]  the record (hash, keys.Queue.Upload)
-- KEYS[2]  the queue's open uploads (sorted set, keys.Queue.Uploads)
-- ARGV[1]  the task's key, ARGV[2] the upload id,
-- ARGV[3..] field, value pairs of the record (besides its id)
-- Returns: the recorded upload id (ARGV[2] unless another was there). Run
-- twice, the second run finds its own id and changes nothing.
local have = redis.call('HGET', KEYS[1], 'id')
if have then
  redis.call('ZADD', KEYS[2], 'NX', now_ms(), ARGV[1])
  return have
end
redis.call('HSET', KEYS[1], 'id', ARGV[2])
for i = 3, #ARGV - 1, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('ZADD', KEYS[2], 'NX', now_ms(), ARGV[1])
return ARGV[2]
