-- cancel.lua: cancels one task. A task not started never starts; a running
-- one is marked and its worker told on the control channel (it records the
-- end when its handler returns); an ended one is left as it is.
-- KEYS[1]  task hash, KEYS[2] result key, KEYS[3] the queue's stream,
-- KEYS[4]  scheduled set, KEYS[5] continuations of the task, KEYS[6] outbox,
-- KEYS[7]  the queue's hooks, KEYS[8..12] for a batch item its batch's
--          record, cancelled set, results hash, marked set and item list
--          (for any other task, five times its hash)
-- KEYS[13] the queue's stats hash, KEYS[14] and KEYS[15] the scheduled
--          set's retrying and held indexes
-- KEYS[16] the list of the partition ARGV[9] (keys.Queue.Partition), when
--          the caller names one; else the task hash again
-- ARGV[1]  consumer group, ARGV[2] task key, ARGV[3] done channel,
-- ARGV[4]  control channel, ARGV[5] retention ms, ARGV[6] reason, ARGV[7] task id,
-- ARGV[8]  for a batch item its index in the batch, else ''
-- ARGV[9]  the partition key whose list is KEYS[16], else ''
-- A task waiting in a partition (behind its head) leaves the partition's
-- list as it is cancelled, so that no slot of its key stays behind: were
-- one left, a task enqueued later with the same key, once this record has
-- expired, would start from that slot, ahead of the tasks enqueued before
-- it. The caller does not know the partition beforehand: a call that finds
-- such a task without its list declared writes nothing and answers
-- {'partition', pk}; the caller then calls again with the list of pk in
-- KEYS[16] and pk in ARGV[9]. A key is listed once while its record
-- waits (enqueue.lua lists only a key without a record, and retrydead.lua
-- takes a dead task's own slot off the head before listing it again), so
-- every slot of the key removed (LREM count 0) is the task's own. Its
-- outbox entry (pt) is written only when it headed the list (for a moment,
-- between two steps of a drain): the task behind it is then to start. One
-- behind the head changes nothing the head's end will not step.
-- A batch item (patterns.Batch) not yet ended is cancelled at once: its
-- batch leaves it out, or, running already, does not record it. A batch
-- cancelled while it waits is closed in the same step (field open and its
-- envelope deleted), so nothing starts it again.
-- The queue's counters follow: a task cancelled while it waited in a
-- partition leaves the count of those (pw), and deleting an entry the group
-- had read and acknowledged (not one waiting) lowers the count of those
-- (ack), so that the waiting count stays exact.
-- Returns: {state}: the final state when it had already ended ('succeeded',
-- 'dead', 'cancelled'); 'cancelled' when cancelled now; 'cancelling' when it
-- runs and its worker was told; '' when no such task is known. A replay
-- answers the same or 'cancelled'. {'partition', pk} when the task waits in
-- partition pk and ARGV[9] is not pk (nothing written: call again with
-- that list declared).
local tk, fk, stream = KEYS[1], KEYS[2], KEYS[3]
local key = ARGV[2]
if redis.call('EXISTS', fk) == 1 then return {'succeeded'} end
if ARGV[8] ~= '' and redis.call('HEXISTS', KEYS[10], ARGV[8]) == 1 then return {'succeeded'} end
local h = redis.call('HMGET', tk, 'st', 'e')
local st, eid = h[1], h[2]
if st == 'dead' or st == 'cancelled' then return {st} end
local wpk = false
if st == 'waiting' then
  wpk = redis.call('HGET', tk, 'pk')
  if wpk and wpk ~= ARGV[9] then return {'partition', wpk} end
end
local known = st ~= false
if not st and string.match(key, '^%d+%-%d+$') then
  eid = key
  st = 'pending'
end
if not st and ARGV[8] ~= '' and redis.call('EXISTS', KEYS[8]) == 1 and tonumber(ARGV[8]) < redis.call('LLEN', KEYS[12]) then
  redis.call('SADD', KEYS[9], ARGV[8])
  redis.call('SADD', KEYS[11], ARGV[8])
  st, known = 'waiting', true
end
if not st then return {''} end
local now = now_ms()
local grp = nil

if st == 'pending' and eid then
  local p = redis.call('XPENDING', stream, ARGV[1], eid, eid, 1)
  if p[1] then
    -- Running: its worker cancels the handler and records the end.
    local existed = redis.call('EXISTS', tk) == 1
    redis.call('HSET', tk, 'cx', ARGV[6])
    if not existed then
      -- A record made only for this request expires if the task ends
      -- without reading it.
      redis.call('PEXPIRE', tk, ARGV[5])
    end
    redis.call('PUBLISH', ARGV[4], eid)
    return {'cancelling'}
  end
  if not known and delivered(stream, ARGV[1], eid) then
    -- Delivered and acked, and its record expired: not a task any more.
    return {''}
  end
  if not (known and redis.call('HEXISTS', tk, 'g') == 1) then
    -- A task without a record (auto-keyed), or whose record does not name
    -- a group, may be a group's member: its entry names the group.
    local e = redis.call('XRANGE', stream, eid, eid)[1]
    if e then
      for j = 1, #e[2], 2 do
        if e[2][j] == 'g' then grp = e[2][j + 1] end
      end
    end
  end
  if redis.call('XDEL', stream, eid) == 0 then
    if not known then
      -- Neither pending nor in the stream: unknown, or ended and expired.
      return {''}
    end
  elseif known and delivered(stream, ARGV[1], eid) then
    -- Read and acknowledged (not pending, checked above), yet still in
    -- the stream: it was not waiting.
    redis.call('HINCRBY', KEYS[13], 'ack', -1)
  end
end
if h[1] == 'waiting' and redis.call('HDEL', tk, 'pc') == 1 then
  -- It was counted among the tasks waiting in a partition.
  redis.call('HINCRBY', KEYS[13], 'pw', -1)
end
-- headed: the waiting task was the head of its partition's list (for a
-- moment, between two steps of a drain), and the task behind it waits to
-- be started.
local headed = false
if wpk then
  headed = redis.call('LINDEX', KEYS[16], 0) == key
  redis.call('LREM', KEYS[16], 0, key)
end
redis.call('ZREM', KEYS[4], key)
redis.call('ZREM', KEYS[14], key)
redis.call('ZREM', KEYS[15], key)
redis.call('HSET', tk, 'st', 'cancelled', 'err', ARGV[6], 'fin', now)
redis.call('HDEL', tk, 'e', 'cx')
redis.call('PEXPIRE', tk, ARGV[5])
if redis.call('HDEL', tk, 'w') == 1 then
  redis.call('PUBLISH', ARGV[3], key)
end
fire(KEYS[5], KEYS[6], KEYS[7], ARGV[7], 'cancelled')
if grp then redis.call('HSET', tk, 'g', grp) end
member_ended(tk, KEYS[6], ARGV[7], 'cancelled')
if string.match(key, '^bt%-[^.]+$') then
  -- A batch (patterns.Batch): it takes no more items and no flush or fill
  -- starts it (batchadd.lua and batchflush.lua start only an open batch);
  -- its items end cancelled too (batchabort.lua).
  redis.call('HDEL', tk, 'open', 'm')
  redis.call('XADD', KEYS[6], '*', 'bd', key, 'st', 'cancelled', 'why', ARGV[6])
end
local pk = redis.call('HGET', tk, 'pk')
if pk and (headed or not wpk) then
  -- A partitioned task that headed its list: the next of its key may start
  -- (partstep.lua). One that waited behind the head left its list above,
  -- and the head, unchanged, steps the partition when it ends.
  redis.call('XADD', KEYS[6], '*', 'pt', pk)
end
return {'cancelled'}
