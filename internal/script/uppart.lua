-- uppart.lua: records a part of a task's multipart upload as stored, if
-- the task's record is still of that upload.
-- KEYS[1]  the record (hash, keys.Queue.Upload)
-- ARGV[1]  the upload id, ARGV[2] the part's field ("p:<n>"), ARGV[3] its
--          value ("<md5 hex>,<sha256 hex>,<size>[,<hash state>]")
-- Returns: 1 recorded, 0 the record is gone or of another upload. Run twice,
-- it sets the same value again.
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
