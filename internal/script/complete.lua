-- complete.lua: records the outcomes of a batch of attempts of one queue, each
-- fenced by its attempt token (entry id, consumer, delivery count), and acks them.
-- KEYS[1]  the queue's stream
-- KEYS[2]  scheduled sorted set (retry backoff, parked tasks)
-- KEYS[3]  dead-letter sorted set
-- KEYS[4]  the queue's hooks (live watchers and pending continuations)
-- KEYS[5]  the queue's outbox (continuations whose parent ended)
-- KEYS[6+3i], KEYS[7+3i], KEYS[8+3i]: task hash, result key and continuation
--          list of item i (0-based)
-- KEYS[6+3n+5j .. 10+3n+5j]: hash, open set, order, held set and
--          continuations of group j (1-based below) whose home is this queue
-- then, after the g groups' keys (KEYS[6+3n+5g ..]): the queue's stats hash,
--          its history hash, and the retrying and held indexes of the
--          scheduled set (keys.Queue.Stats, StatsHistory, SchedRetrying,
--          SchedHeld), then the g groups' progress hashes
--          (keys.Queue.GroupProgress, in the order of their groups)
-- then, last, per declared partition d (1-based, see below): the
--          partition's list and the task hash of the task its entry named
--          behind it (the list again when it named none)
-- ARGV[1]  consumer group, ARGV[2] consumer name, ARGV[3] done channel,
-- ARGV[4]  n, ARGV[5] queue name
-- ARGV[6..] per item 10 values: op, entry id, delivery count, task key, fresh,
--          attempt (the number of the attempt that ended), a1, a2, a3, and
--          the public id of the group the task is a member of, or ''. A
--          group listed below (its home is this queue) counts its members
--          here, once per group after every item; any other is told
--          through the outbox.
-- ARGV[6+10n] the number of groups, then per group: public id, own id
-- then the number of declared partitions, then per partition: the item
--   (1-based), its partition key and the key of the task behind it ('' for
--   none), as the item's stream entry named them (fields pk and nx, written
--   by the step that started it): a guess the script checks
-- ARGV[#ARGV-1], ARGV[#ARGV]: the lowest and the highest entry id of the
--   items (or ''), bounding the one XPENDING that fences the batch
--   fresh is '1' when the entry is the first of an auto-keyed task: then no
--   record can exist but one a watcher or a continuation made (each is a
--   live member of KEYS[4]) or a cancel request (which expires on its own);
--   while KEYS[4] has no live member, none is looked for.
--   (retentions are bounded to 1 .. 2^53-1 ms)
--   op 's' succeeded: a1 result, a2 retention ms. The task hash is
--                     deleted and the record "s\n<attempt>\n<finished ms>\n<token>\n<result>"
--                     set at the result key with the retention as its TTL.
--   op 'r' retry:     a1 next envelope, a2 delay ms, a3 error text
--   op 'd' dead:      a1 envelope (or raw entry), a2 error text
--   (after 'r', 'd' or 'p', if a cancel was requested meanwhile, the task is
--   cancelled instead)
--   op 'c' cancelled: a1 retention ms, a2 reason
--   op 'p' park:      a1 next envelope, a2 delay ms (0: back into the stream now), a3 unused
-- Succeeded, dead and cancelled tasks fire their continuations into the
-- outbox, and, when they are members of a group (field g), tell it there.
-- A partitioned task that ends (field pk) steps its partition here when its
-- item declared the partition and the list still agrees: it heads the list
-- and the task behind it is the one declared (or none was declared and none
-- is behind it). It is popped and the task behind it, when it waits,
-- started as partstep.lua starts one. Otherwise its end goes to the outbox
-- (pt) for the drain to step.
-- The queue's counters follow: the acknowledged entries still in the stream
-- (by XACK's answer), and the attempts that ended succeeded ('s') or failed
-- ('r', 'd'), counted once per call; a retry or a park with a delay is
-- indexed as retrying or held beside the scheduled set.
-- It runs at Redis' memory limit too (see below). An unknown op fails the
-- call before anything is written.
-- Returns: n integers, 1 applied (also for a replay of this same call), 2
-- applied and the outbox written (drain it), 0 lease lost (the entry
-- is no longer pending under this consumer with this delivery count; nothing
-- was written for it).
local now = now_ms()
local stream, group, consumer, chan = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local n = tonumber(ARGV[4])
local qname = ARGV[5]
local watched = redis.call('ZCOUNT', KEYS[4], now, '+inf') > 0
local groups, byPub = {}, {}
local gb = 6 + 10 * n
local ng = tonumber(ARGV[gb])
local kx = 6 + 3 * n + 5 * ng
local stats, hist, retrying, heldx = KEYS[kx], KEYS[kx + 1], KEYS[kx + 2], KEYS[kx + 3]
for j = 1, ng do
  local kb = 6 + 3 * n + 5 * (j - 1)
  groups[j] = {
    keys = {KEYS[kb], KEYS[kb + 1], KEYS[kb + 2], KEYS[kb + 3], KEYS[kb + 4], KEYS[5], KEYS[4], stats, KEYS[kx + 3 + j]},
    pub = ARGV[gb + 2 * j - 1], own = ARGV[gb + 2 * j], ends = {}, item = 0,
  }
  byPub[groups[j].pub] = groups[j]
end
-- The partitions declared, by item (1-based).
local decl = {}
local pb = gb + 2 * ng + 1
for d = 1, tonumber(ARGV[pb]) or 0 do
  local a, k = pb + 3 * (d - 1), kx + 3 + ng + 2 * (d - 1)
  decl[tonumber(ARGV[a + 1])] = {pk = ARGV[a + 2], nx = ARGV[a + 3], list = KEYS[k + 1], nk = KEYS[k + 2]}
end

-- step steps the partition pk of task key, which ended, when its item
-- declared it (d) and the list agrees (see the header); it reports whether
-- it did, and when it did not but read the list with key at its head, the
-- key of the task behind it (false for none). A replay of this call never
-- comes here (the attempt is recorded, so the item is not held).
local function step(d, pk, key)
  if not d or d.pk ~= pk then return false, nil end
  local l = d.list
  -- The head, the task behind it, and the one behind that (the started
  -- task's next).
  local ks = redis.call('LRANGE', l, 0, 2)
  if ks[1] ~= key then return false, nil end
  local behind = ks[2] or false
  if d.nx == '' or behind ~= d.nx then
    if behind then return false, behind end
    redis.call('LPOP', l)
    return true, nil
  end
  local h = redis.call('HMGET', d.nk, 'st', 'm', 'pc')
  if h[1] ~= 'waiting' or not h[2] then return false, behind end
  redis.call('LPOP', l)
  -- Started as partstep.lua starts a task: its entry and its hash name the
  -- task now behind it, if any.
  local nx = ks[3]
  if nx then
    local id = redis.call('XADD', stream, '*', 'm', h[2], 'pk', pk, 'nx', nx)
    redis.call('HSET', d.nk, 'st', 'pending', 'e', id, 'nx', nx)
  else
    local id = redis.call('XADD', stream, '*', 'm', h[2], 'pk', pk)
    redis.call('HSET', d.nk, 'st', 'pending', 'e', id)
    redis.call('HDEL', d.nk, 'nx')
  end
  if h[3] then
    redis.call('HDEL', d.nk, 'm', 'pc')
    redis.call('HINCRBY', stats, 'pw', -1)
  else
    redis.call('HDEL', d.nk, 'm')
  end
  return true, nil
end

-- ended fires the continuations of task key (item i) that ended in state,
-- when it has any (f[1], its field k, set by a registration; f is nil for a
-- task without a record), tells its group grp (or, when the worker did
-- not know it, the group its record names, f[2]), and its partition (f[3]);
-- it reports whether the outbox was written.
local function ended(f, ck, key, state, grp, i)
  if grp == '' and f and f[2] then grp = f[2] end
  local wrote = false
  local id = qname .. '/' .. key
  if f and f[1] and fire(ck, KEYS[5], KEYS[4], id, state) > 0 then wrote = true end
  local stepped, nx = false, nil
  if f and f[3] then stepped, nx = step(decl[i], f[3], key) end
  if f and f[3] and not stepped then
    -- A partitioned task whose partition was not stepped here: the next of
    -- its key may start (partstep.lua). The entry names this task (k) and
    -- the one behind it, as the list just read showed it or else as its
    -- start recorded it (field nx of its hash, KEYS[3 + 3i]): the drain
    -- then steps the partition without reading its list first.
    if nx == nil then nx = redis.call('HGET', KEYS[3 + 3 * i], 'nx') end
    if nx then
      redis.call('XADD', KEYS[5], '*', 'pt', f[3], 'k', key, 'nx', nx)
    else
      redis.call('XADD', KEYS[5], '*', 'pt', f[3], 'k', key)
    end
    wrote = true
  end
  if grp ~= '' then
    local gr = byPub[grp]
    if gr then
      gr.ends[#gr.ends + 1] = id
      gr.ends[#gr.ends + 1] = state
      gr.item = i
    else
      redis.call('XADD', KEYS[5], '*', 'g', grp, 'm', id, 'st', state)
      wrote = true
    end
  end
  return wrote
end

local function holds(eid, dlv)
  local p = redis.call('XPENDING', stream, group, eid, eid, 1)
  return p[1] ~= nil and p[1][2] == consumer and tonumber(p[1][4]) == tonumber(dlv)
end

-- The batch is fenced with one XPENDING of this consumer's entries from the
-- batch's lowest id (ARGV lo, from the caller) to its highest (hi), a few
-- pages at most, rather than one XPENDING per item: pend maps each entry
-- listed to its delivery count, upto is the last id the listing covers
-- (nil: none). An item listed holds its lease when its delivery count
-- matches; one not listed within lo .. upto is not pending here; any other
-- (outside that range, or a caller's lo/hi that do not bound the batch) is
-- looked up on its own (holds). Ids are compared only for items not listed.
local function idparts(id)
  local d = string.find(id, '-', 1, true)
  if not d or d == 1 or d == #id then return nil end
  local ms, seq = string.sub(id, 1, d - 1), string.sub(id, d + 1)
  if string.find(ms, '%D') or string.find(seq, '%D') then return nil end
  if (#ms > 1 and string.byte(ms) == 48) or (#seq > 1 and string.byte(seq) == 48) then return nil end
  return ms, seq
end
-- declt compares two decimal numbers written without leading zeros.
local function declt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
-- idle reports a <= b for ids of the form idparts accepts.
local function idle(am, as, bm, bs)
  if am ~= bm then return declt(am, bm) end
  return not declt(bs, as)
end
local pend, upto = {}, nil
local lo, hi = ARGV[#ARGV - 1], ARGV[#ARGV]
if n > 0 and idparts(lo) and idparts(hi) then
  local from, page = lo, 2 * n + 16
  for _ = 1, 4 do
    local p = redis.call('XPENDING', stream, group, from, hi, page, consumer)
    for _, e in ipairs(p) do pend[e[1]] = tonumber(e[4]) end
    if #p < page then
      upto = hi
      break
    end
    upto = p[#p][1]
    -- The next page starts just after the last entry listed.
    local ms, seq = idparts(upto)
    local nx = tonumber(seq) + 1
    if nx >= 2 ^ 53 then break end
    from = ms .. '-' .. string.format('%d', nx)
  end
end
local function held_now(eid, dlv)
  local d = pend[eid]
  if d then return d == tonumber(dlv) end
  if upto then
    local em, es = idparts(eid)
    local lm, ls = idparts(lo)
    local um, us = idparts(upto)
    if em and idle(lm, ls, em, es) and idle(em, es, um, us) then return false end
  end
  return holds(eid, dlv)
end

-- recorded reports whether this very attempt's outcome is already written (a
-- replay of this call).
local function recorded(tk, fk, token)
  if redis.call('HGET', tk, 'x') == token then return true end
  local f = redis.call('GET', fk)
  return f and string.match(f, '^s\n[^\n]*\n[^\n]*\n([^\n]*)\n') == token
end

-- ttl bounds a retention (ms, as sent) to what SET PX and PEXPIRE accept,
-- 1 to 2^53-1 (codec.MaxRetainMs): an error there would leave the items
-- before it written and the rest not.
local function ttl(ms)
  local v = tonumber(ms)
  if not v or v < 1 then return '1' end
  if v > 9007199254740991 then return '9007199254740991' end
  return ms
end

-- Every check comes before the first write: a script that fails halfway is
-- not rolled back.
local held, first = {}, nil
for i = 0, n - 1 do
  local b = 6 + 10 * i
  local op = ARGV[b]
  if op ~= 's' and op ~= 'r' and op ~= 'd' and op ~= 'c' and op ~= 'p' then
    return redis.error_reply('complete.lua: unknown op ' .. tostring(op))
  end
  if held_now(ARGV[b + 1], ARGV[b + 2]) then
    held[i] = true
    first = first or i
  end
end
-- Redis over its maxmemory (noeviction) refuses a script whose first write
-- is a command that may grow memory (SET, HSET, XADD, ZADD ...), and lets
-- the rest of a script run once it wrote. So the first write is one that
-- is not: the heartbeat's XCLAIM of an entry this call holds (it changes
-- nothing but the entry's idle time). Outcomes are thus recorded at the
-- memory limit, each acking its entry and ending its attempt's state; the
-- acks stay last, so that a call failing halfway leaves its entries to be
-- taken over rather than acked without an outcome.
if first then
  local b = 6 + 10 * first
  redis.call('XCLAIM', stream, group, consumer, 0, ARGV[b + 1], 'RETRYCOUNT', ARGV[b + 2], 'JUSTID')
end
local acks = {}
local res = {}
-- now as text, formatted once rather than per record.
local nows = string.format('%d', now)
local ok, failed = 0, 0
for i = 0, n - 1 do
  local b = 6 + 10 * i
  local op, eid, dlv, key = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local att, a1, a2, a3 = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
  local grp = ARGV[b + 9]
  local tk, fk, ck = KEYS[6 + 3 * i], KEYS[7 + 3 * i], KEYS[8 + 3 * i]
  -- The attempt's token; a success held here writes it straight into its
  -- record (one string the fewer per item).
  local token
  if op ~= 's' or not held[i] then token = eid .. '/' .. consumer .. '/' .. dlv end
  if op == 's' then a2 = ttl(a2) elseif op == 'c' then a1 = ttl(a1) end
  if not held[i] then
    if recorded(tk, fk, token) then res[i + 1] = 1 else res[i + 1] = 0 end
  else
    acks[#acks + 1] = eid
    res[i + 1] = 1
    -- A task with no record yet has no fields to clear, no watcher to tell
    -- and no continuation to fire.
    local fresh = (ARGV[b + 4] == '1' and not watched) or redis.call('EXISTS', tk) == 0
    local notify, final = false, nil
    if (op == 'r' or op == 'd' or op == 'p') and not fresh then
      -- A cancel was requested meanwhile: the task ends cancelled, neither
      -- retried, dead-lettered nor handed back. (Kept 24 hours: these ops
      -- do not carry the task's retention.)
      local cx = redis.call('HGET', tk, 'cx')
      if cx then
        op, a1, a2 = 'c', tostring(86400000), cx
      end
    end
    if op == 's' then
      ok = ok + 1
      if not fresh then
        local f = redis.call('HMGET', tk, 'w', 'k', 'g', 'pk')
        notify = f[1] ~= false
        if ended({f[2], f[3], f[4]}, ck, key, 'succeeded', grp, i + 1) then res[i + 1] = 2 end
        redis.call('DEL', tk)
        fresh = true
      elseif grp ~= '' then
        ended(nil, ck, key, 'succeeded', grp, i + 1)
      end
      redis.call('SET', fk, 's\n' .. att .. '\n' .. nows .. '\n' .. eid .. '/' .. consumer .. '/' .. dlv .. '\n' .. a1, 'PX', a2)
      if notify then redis.call('PUBLISH', chan, key) end
    elseif op == 'r' then
      failed = failed + 1
      redis.call('HSET', tk, 'st', 'retrying', 'm', a1, 'err', a3, 'a', att, 'x', token)
      if grp ~= '' then redis.call('HSET', tk, 'g', grp) end
      if not fresh then
        redis.call('HDEL', tk, 'e')
        redis.call('PERSIST', tk)
      end
      redis.call('ZADD', KEYS[2], now + tonumber(a2), key)
      redis.call('ZADD', retrying, now + tonumber(a2), key)
      redis.call('ZREM', heldx, key)
    elseif op == 'd' then
      failed = failed + 1
      redis.call('HSET', tk, 'st', 'dead', 'm', a1, 'err', a2, 'a', att, 'fin', now, 'e', eid, 'x', token)
      if grp ~= '' then redis.call('HSET', tk, 'g', grp) end
      if not fresh then
        redis.call('PERSIST', tk)
        redis.call('HDEL', tk, 'cx')
      end
      redis.call('ZADD', KEYS[3], now, key)
      final = 'dead'
    elseif op == 'c' then
      redis.call('HSET', tk, 'st', 'cancelled', 'err', a2, 'a', att, 'fin', now, 'e', eid, 'x', token)
      redis.call('HDEL', tk, 'cx')
      redis.call('PEXPIRE', tk, a1)
      final = 'cancelled'
    elseif op == 'p' then
      if grp ~= '' then redis.call('HSET', tk, 'g', grp) end
      if tonumber(a2) == 0 then
        local id
        if grp ~= '' then
          id = redis.call('XADD', stream, '*', 'm', a1, 'g', grp)
        else
          id = redis.call('XADD', stream, '*', 'm', a1)
        end
        redis.call('HSET', tk, 'st', 'pending', 'e', id, 'x', token)
        if not fresh then redis.call('HDEL', tk, 'm') end
      else
        redis.call('HSET', tk, 'st', 'scheduled', 'm', a1, 'x', token)
        if not fresh then redis.call('HDEL', tk, 'e') end
        redis.call('ZADD', KEYS[2], now + tonumber(a2), key)
        redis.call('ZADD', heldx, now + tonumber(a2), key)
        redis.call('ZREM', retrying, key)
      end
      if not fresh then redis.call('PERSIST', tk) end
    end
    if final and string.match(key, '^bt%-[^.]+$') then
      -- A batch (patterns.Batch) that ended without its run recording its
      -- items: they end the same way (batchabort.lua, from the outbox).
      redis.call('XADD', KEYS[5], '*', 'bd', key, 'st', final, 'why', a2)
      res[i + 1] = 2
    end
    if final and fresh then
      ended(nil, ck, key, final, grp, i + 1)
    elseif final then
      if ended(redis.call('HMGET', tk, 'k', 'g', 'pk'), ck, key, final, grp, i + 1) then res[i + 1] = 2 end
      if redis.call('HDEL', tk, 'w') == 1 then
        redis.call('PUBLISH', chan, key)
      end
    end
  end
end
for _, gr in ipairs(groups) do
  if #gr.ends > 0 then
    local _, wrote = group_count(gr.keys, chan, gr.pub, gr.own, gr.ends)
    if wrote == 1 then res[gr.item] = 2 end
  end
end
count_ended(stats, hist, ok + failed, failed, now)
if #acks > 0 then
  -- Entries acknowledged stay in the stream until housekeeping trims them.
  redis.call('HINCRBY', stats, 'ack', redis.call('XACK', stream, group, unpack(acks)))
end
return res
