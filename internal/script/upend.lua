-- upend.lua: removes a task's multipart upload record (the upload was
-- completed or aborted), if it is still of that upload, and the task from
-- the queue's open uploads.
-- KEYS[1]  the record (hash, keys.Queue.Upload)
-- KEYS[2]  the queue's open uploads (sorted set, keys.Queue.Uploads)
-- ARGV[1]  the task's key, ARGV[2] the upload id
-- Returns: 1 removed (or there was none), 0 the record is of another upload
-- and stays. Run twice, the second run finds nothing and changes nothing.
local have = redis.call('HGET', KEYS[1], 'id')
if have and have ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
