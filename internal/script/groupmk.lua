-- groupmk.lua: creates a queue's stream and its workers' consumer group, when
-- the group is missing, and starts the queue's exact count of the entries
-- read and acknowledged that are still in the stream (stats field ack, 0:
-- a new group has read nothing; field ax marks it exact). A group that
-- exists is left as it is, with nothing written (so a worker starts at
-- Redis' memory limit), and so is a resend.
-- KEYS[1]  the queue's stream, KEYS[2] its stats hash
-- ARGV[1]  consumer group
-- Returns: 1 created, 0 the group existed.
if redis.call('EXISTS', KEYS[1]) == 1 and last_delivered(KEYS[1], ARGV[1]) then return 0 end
redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
redis.call('HSET', KEYS[2], 'ack', 0, 'ax', 1)
return 1
