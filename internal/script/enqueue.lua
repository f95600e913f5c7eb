-- enqueue.lua: adds a batch of tasks to one queue; a replay of the same batch changes nothing.
-- KEYS[1]  the queue's stream
-- KEYS[2]  the marker of this batch operation (op id chosen by the client)
-- KEYS[3]  the queue's scheduled set (delayed tasks)
-- KEYS[4]  the queue's stats hash (field pw counts the tasks waiting in a
--          partition behind its head; such a task's hash gets pc = 1, so
--          that only tasks counted there leave the count)
-- KEYS[5..] per task that carries a user key, in batch order: its task hash and
--           its result key, and for a task with a partition key that
--           partition's list
-- KEYS[#KEYS-m+1..] the last m keys: markers of earlier calls of the client
--           to this queue whose replies it read (so it sends them no more)
-- ARGV[1]  consumer group name (unused: the client creates the group once)
-- ARGV[2]  how long the op marker lives, ms
-- ARGV[3]  n, the number of tasks; or 'a' followed by n when every task
--          is auto-keyed (EnqueueMany's commonest batch), each then given
--          by its envelope alone (one value instead of six below)
-- ARGV[4..] per task six values: user key ('' for an auto-keyed task),
--           envelope, group ('' or the public id of the group the task is a
--           member of; only keyed tasks), hold ('1': the task is created
--           waiting, outside the stream, until activate.lua moves it in;
--           only keyed tasks), due (Unix ms in Redis time; a task due later
--           than now waits in the scheduled set until forward.lua moves it;
--           '0' or '': now; only keyed tasks), partition key ('' for none;
--           only keyed tasks): the task joins the tail of its partition's
--           list and enters the stream only at its head (at once when the
--           partition is idle, its entry then naming the partition in field
--           pk; else when the tasks before it ended; see partstep.lua).
--           A partition key (or '') after the byte \1 marks a task written
--           only where its key has a task already: its partition's list, or
--           the record or result of its key; the byte \2, a Unix ms time and
--           ':' mark one written so once Redis' time reached that time (a
--           task placed by a sharded queue's old layout during a change's
--           grace); else nothing is written and
--           its answer is 2 (a sharded queue's task sent to its key's old
--           shard, whose tasks ended meanwhile: the client sends it to its
--           new shard)
-- ARGV[4+6n] m, the number of earlier markers carried at the end of KEYS
--           (absent: 0); ARGV[4+n] in the auto-keyed form
-- ARGV[5+6n] the grace, ms: each carried marker is set to expire after it
--           (ARGV[5+n] in the auto-keyed form)
--           (a try of its call still in flight may still need it that long)
-- Returns: a flat array, per task: task key (the entry id for auto keys), 1 if the
-- key already named a task (nothing was added), 2 if a task marked \1 found no
-- task of its key (nothing was added), else 0. A replay returns the first
-- run's answer.
local prev = redis.call('GET', KEYS[2])
if prev then
  return cjson.decode(prev)
end
local out = {}
local n, w = tonumber(ARGV[3]), 6
if not n then
  n, w = tonumber(string.sub(ARGV[3], 2)), 1
  for i = 4, 3 + n do
    out[#out + 1] = redis.call('XADD', KEYS[1], '*', 'm', ARGV[i])
    out[#out + 1] = 0
  end
end
local ki = 5
local now = nil
for i = 0, (w == 6 and n or 0) - 1 do
  local b = 4 + 6 * i
  local key, env, grp, hold = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local due = tonumber(ARGV[b + 4]) or 0
  local part = ARGV[b + 5]
  local there, mark = false, string.byte(part, 1)
  if mark == 1 then
    there, part = true, string.sub(part, 2)
  elseif mark == 2 then
    local colon = string.find(part, ':', 2, true)
    local from = tonumber(string.sub(part, 2, colon - 1))
    part = string.sub(part, colon + 1)
    if not now then now = now_ms() end
    there = now >= from
  end
  if due > 0 and not now then now = now_ms() end
  if due > 0 and due <= now then due = 0 end
  if key == '' then
    out[#out + 1] = redis.call('XADD', KEYS[1], '*', 'm', env)
    out[#out + 1] = 0
  else
    local tk, fk, pl = KEYS[ki], KEYS[ki + 1], nil
    ki = ki + 2
    if part ~= '' then
      pl = KEYS[ki]
      ki = ki + 1
    end
    if redis.call('EXISTS', tk, fk) > 0 then
      out[#out + 1] = key
      out[#out + 1] = 1
    elseif there and not (pl and redis.call('EXISTS', pl) > 0) then
      out[#out + 1] = key
      out[#out + 1] = 2
    else
      local f
      if pl then
        if redis.call('LINDEX', pl, 0) == key then
          -- A task of this key that ended (its record gone) and whose end
          -- is not drained yet still heads the partition: drop that entry.
          redis.call('LPOP', pl)
        end
        if redis.call('RPUSH', pl, key) == 1 then
          -- Its entry names its partition (and no task behind it): its
          -- end steps the partition in complete.lua (see partstep.lua).
          f = {'st', 'pending', 'e', redis.call('XADD', KEYS[1], '*', 'm', env, 'pk', part)}
        else
          f = {'st', 'waiting', 'm', env, 'pc', '1'}
          redis.call('HINCRBY', KEYS[4], 'pw', 1)
        end
        f[#f + 1], f[#f + 2] = 'pk', part
      elseif hold == '1' then
        f = {'st', 'waiting', 'm', env}
      elseif due > 0 then
        f = {'st', 'scheduled', 'm', env}
        redis.call('ZADD', KEYS[3], due, key)
      else
        f = {'st', 'pending', 'e', redis.call('XADD', KEYS[1], '*', 'm', env)}
      end
      if grp ~= '' then
        f[#f + 1], f[#f + 2] = 'g', grp
      end
      redis.call('HSET', tk, unpack(f))
      out[#out + 1] = key
      out[#out + 1] = 0
    end
  end
end
redis.call('SET', KEYS[2], cjson.encode(out), 'PX', ARGV[2])
-- After the writes above, not before: a first write that is not refused at
-- maxmemory would let the deny-oom ones through, and an enqueue must be
-- refused there. PEXPIRE again is harmless, on a missing key a no-op.
local m = tonumber(ARGV[4 + w * n]) or 0
if m > 0 then
  local grace = ARGV[5 + w * n]
  for i = #KEYS - m + 1, #KEYS do
    redis.call('PEXPIRE', KEYS[i], grace)
  end
end
return out
