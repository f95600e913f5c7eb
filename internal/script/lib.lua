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
