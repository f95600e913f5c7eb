-- upsweep.lua: the sweeper's removal of a task's multipart upload record,
-- checked against the task's state in the same call: the record goes only
-- if the task is still ended (dead, cancelled, succeeded) or not known (no
-- state in its hash). A task put back by RetryDead after the sweeper read
-- its state keeps its record (and its upload, which the new run resumes).
-- KEYS[1]  the task's hash (keys.Queue.Task)
-- KEYS[2]  the record (hash, keys.Queue.Upload)
-- KEYS[3]  the queue's open uploads (sorted set, keys.Queue.Uploads)
-- ARGV[1]  the task's key, ARGV[2] the upload id
-- Returns: 1 removed, or there was no record (a resent call whose first
-- run removed it: the caller aborts, and an abort of an upload gone is
-- harmless); 0 the task is not ended, or the record is of another upload:
-- nothing changes.
local st = redis.call('HGET', KEYS[1], 'st')
if st and st ~= 'dead' and st ~= 'cancelled' and st ~= 'succeeded' then
  return 0
end
local have = redis.call('HGET', KEYS[2], 'id')
if have and have ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
