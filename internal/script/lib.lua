-- lib.lua: helpers that script.go puts in front of every script (Redis 6.2
-- has no shared Lua functions). Each script's own file opens with its
-- KEYS/ARGV/return contract; these helpers touch only the keys passed in.

-- now_ms returns Redis' time in Unix milliseconds.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- last_delivered returns the id of the last entry group read from stream, or
-- nil.
local function last_delivered(stream, group)
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local name, last = nil, nil
    for j = 1, #g, 2 do
      if g[j] == 'name' then name = g[j + 1] end
      if g[j] == 'last-delivered-id' then last = g[j + 1] end
    end
    if name == group then return last end
  end
  return nil
end

-- delivered reports whether group has read entry id of stream (ids compare as
-- (ms, seq) pairs).
local function delivered(stream, group, id)
  local last = last_delivered(stream, group)
  if not last then return false end
  local ams, aseq = string.match(id, '^(%d+)%-(%d+)$')
  local bms, bseq = string.match(last, '^(%d+)%-(%d+)$')
  if not (ams and bms) then return false end
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams < bms or (ams == bms and aseq <= bseq)
end

-- fire moves the continuations listed at ck into outbox, as continuations of
-- parent (a task id) that ended in state, and drops their hooks. It returns
-- how many there were.
local function fire(ck, outbox, hooks, parent, state)
  local specs = redis.call('LRANGE', ck, 0, -1)
  for _, sp in ipairs(specs) do
    redis.call('XADD', outbox, '*', 's', sp, 'p', parent, 'st', state)
    redis.call('ZREM', hooks, 'c:' .. sp)
  end
  if #specs > 0 then redis.call('DEL', ck) end
  return #specs
end

-- member_ended tells the group the task with hash tk belongs to (its field g,
-- a public group id) that the task, member, ended in state: an entry in
-- outbox, which a drain hands to the group's slot. Returns whether the task
-- belongs to a group.
local function member_ended(tk, outbox, member, state)
  local g = redis.call('HGET', tk, 'g')
  if not g then return false end
  redis.call('XADD', outbox, '*', 'g', g, 'm', member, 'st', state)
  return true
end

-- progress_member parses a member's value in a group's progress hash
-- (keys.Queue.GroupProgress; written by gpset.lua): nil for none, else
-- {d, t, a, s, w, n} (done, total, attempt, seq, run id, write count).
local function progress_member(v)
  if not v then return nil end
  local d, t, a, s, w, n = string.match(v, '^(%d+) (%d+) (%d+) (%d+) (%S+) (%d+) ')
  if not d then return nil end
  return {d = tonumber(d), t = tonumber(t), a = tonumber(a), s = tonumber(s), w = w, n = tonumber(n)}
end

-- group_count counts members of one group that ended, exactly once each: a
-- member counts only when SREM removes it from the group's open set. The
-- group ends in the same call when its open set empties (or at the first
-- failure, with fail fast): its continuations (the join) go to outbox, the
-- group it is a member of is told there, and its keys take the retention.
-- With an InvokeAll limit, each member that held a slot frees it and the
-- next held members are released (through outbox, to be activated).
-- Sealing is the removal of the sentinel member "~open".
-- k: {group hash, open set, order, held set, continuations, home outbox,
-- home hooks, home stats (its field ia counts the held members), and
-- optionally the group's progress hash (keys.Queue.GroupProgress: it takes
-- the group's lifetime, and a member that succeeded counts as done in full
-- there)}; chan:
-- home done channel; pub: public group id; own: the
-- group's own id; ends: flat list of member name, final state.
-- Returns the group's state ('' when unknown: nothing done) and 1 if
-- outbox was written, else 0.
local function group_count(k, chan, pub, own, ends)
  local g, open, order, held, conts, outbox, hooks, stats = k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8]
  -- The keys whose lifetime is the group's; its progress hash
  -- among them when the caller passed it.
  local lifetime = {g, open, order, held, conts}
  if k[9] then lifetime[6] = k[9] end
  local h = redis.call('HMGET', g, 'st', 'ff', 'lim', 'free', 'cx', 'sealed', 'bad', 'ic')
  -- ic: its held members are counted in stats (groups made before the
  -- count was kept are not, so they must not lower it).
  local counted = h[8] == '1'
  local st = h[1]
  if not st then return '', 0 end
  local bad = tonumber(h[7]) or 0
  local lim, free = tonumber(h[3]) or 0, tonumber(h[4]) or 0
  local sealed = h[6] == '1'
  local wrote = 0
  for i = 1, #ends, 2 do
    local m, s = ends[i], ends[i + 1]
    if redis.call('SREM', open, m) == 1 then
      if m == '~open' then
        redis.call('HSET', g, 'sealed', '1')
        sealed = true
        -- Complete: kept until it ends (then for its retention; one that
        -- ended already, failing fast while it was made, keeps that).
        if st == 'running' then
          for _, key in ipairs(lifetime) do
            redis.call('PERSIST', key)
          end
        end
      else
        if s == 'succeeded' then
          redis.call('HINCRBY', g, 'ok', 1)
          if k[9] then
            -- A member that succeeded counts as done in full
            -- in the group's sums (its last report may say less).
            local p = progress_member(redis.call('HGET', k[9], m))
            if p and p.t > p.d then
              redis.call('HSET', k[9], m, string.format('%d %d %d %d %s %d %d', p.t, p.t, p.a, p.s, p.w, p.n, now_ms()))
              redis.call('HINCRBY', k[9], '~d', string.format('%d', p.t - p.d))
            end
          end
        else
          bad = redis.call('HINCRBY', g, 'bad', 1)
          redis.call('HSETNX', g, 'first', m)
        end
        if lim > 0 then
          if redis.call('ZREM', held, m) == 0 then
            -- It had been released, so it held a slot.
            free = free + 1
          elseif counted then
            redis.call('HINCRBY', stats, 'ia', -1)
          end
        end
      end
    end
  end

  local function finish(state)
    local now = now_ms()
    redis.call('HSET', g, 'st', state, 'fin', now, 'free', free)
    local ret = redis.call('HGET', g, 'ret')
    fire(conts, outbox, hooks, pub, state)
    local pg = redis.call('HGET', g, 'pg')
    if pg and pg ~= '' then
      redis.call('XADD', outbox, '*', 'g', pg, 'm', redis.call('HGET', g, 'pm'), 'st', state)
    end
    for _, key in ipairs(lifetime) do
      redis.call('PEXPIRE', key, ret)
    end
    redis.call('PUBLISH', chan, 'group:' .. own)
    wrote = 1
    st = state
  end

  if st == 'running' then
    if h[2] == '1' and bad > 0 and not h[5] then
      -- Fail fast: the group ends now; a drain cancels the open members.
      finish('failed')
      redis.call('XADD', outbox, '*', 'x', pub, 'why', 'group ' .. pub .. ' failed fast: member ' .. redis.call('HGET', g, 'first') .. ' did not succeed')
    elseif redis.call('SCARD', open) == 0 then
      if h[5] then
        finish('cancelled')
      elseif bad > 0 then
        finish('failed')
      else
        finish('succeeded')
      end
    elseif lim > 0 and sealed and not h[5] then
      -- Release at most 1000 per call; a notice for the group in the
      -- outbox makes the drain come back for the rest.
      local n = 0
      while free > 0 do
        if n == 1000 then
          redis.call('XADD', outbox, '*', 'g', pub, 'm', '~pump', 'st', 'succeeded')
          break
        end
        local p = redis.call('ZPOPMIN', held)
        if not p[1] then break end
        redis.call('XADD', outbox, '*', 's', p[1] .. '|0', 'p', pub, 'st', 'released')
        if counted then redis.call('HINCRBY', stats, 'ia', -1) end
        free = free - 1
        n = n + 1
        wrote = 1
      end
    end
  end
  if lim > 0 then redis.call('HSET', g, 'free', free) end
  return st, wrote
end

-- count_ended adds n attempts that ended with an outcome, f of them failed,
-- to a queue's totals (stats: fields n and f) and to its recent history
-- (hist, keys.Queue.StatsHistory: the slot of this second and of this minute
-- of Redis time, now in ms). Callers count a batch at once, and only on the
-- run that recorded the outcomes (a resend records nothing, so counts
-- nothing).
local function count_ended(stats, hist, n, f, now)
  if n == 0 then return end
  redis.call('HINCRBY', stats, 'n', n)
  if f > 0 then redis.call('HINCRBY', stats, 'f', f) end
  local sec = math.floor(now / 1000)
  local min = math.floor(sec / 60)
  local fs, fm = 's' .. string.format('%d', sec % 60), 'm' .. string.format('%d', min % 1440)
  local cur = redis.call('HMGET', hist, fs, fm)
  local function add(v, stamp)
    local a, b = 0, 0
    if v then
      local s, x, y = string.match(v, '^(%d+):(%d+):(%d+)$')
      if tonumber(s) == stamp then a, b = tonumber(x), tonumber(y) end
    end
    return string.format('%d:%d:%d', stamp, a + n, b + f)
  end
  redis.call('HSET', hist, fs, add(cur[1], sec), fm, add(cur[2], min))
  -- A day and ten minutes: by then every slot is stale.
  redis.call('PEXPIRE', hist, 87000000)
end
