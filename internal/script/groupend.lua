-- groupend.lua: counts members of one group that ended, exactly once each:
-- a member counts only when SREM removes it from the open set. The group
-- ends in this same script when its open set empties (or at the first
-- failure, with fail fast): its continuations (the join) go to the outbox,
-- its own parent group is told there, and its keys take the retention.
-- With an InvokeAll limit, each member that held a slot frees it and the
-- next held members are released (through the outbox, to be activated).
-- Sealing is the removal of the sentinel member "~open".
-- KEYS[1]  group hash, KEYS[2] open set, KEYS[3] order, KEYS[4] held set,
-- KEYS[5]  continuations, KEYS[6] home queue's outbox, KEYS[7] its hooks
-- ARGV[1]  home queue's done channel, ARGV[2] public group id, ARGV[3] the
--          group's own id, then pairs: member name, final state
--          ('succeeded', 'dead', 'cancelled', 'failed')
-- Returns: {state of the group, 1 if the outbox was written}; state '' when
-- the group is unknown (expired): nothing was done.
local g, open, order, held, conts, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local h = redis.call('HMGET', g, 'st', 'ff', 'lim', 'free', 'cx', 'sealed')
local st = h[1]
if not st then return {'', 0} end
local lim, free = tonumber(h[3]) or 0, tonumber(h[4]) or 0
local sealed = h[6] == '1'
local wrote = 0
for i = 4, #ARGV, 2 do
  local m, s = ARGV[i], ARGV[i + 1]
  if redis.call('SREM', open, m) == 1 then
    if m == '~open' then
      redis.call('HSET', g, 'sealed', '1')
      sealed = true
    else
      if s == 'succeeded' then
        redis.call('HINCRBY', g, 'ok', 1)
      else
        redis.call('HINCRBY', g, 'bad', 1)
        redis.call('HSETNX', g, 'first', m)
      end
      if lim > 0 and redis.call('ZREM', held, m) == 0 then
        -- It had been released, so it held a slot.
        free = free + 1
      end
    end
  end
end

local function finish(state)
  local now = now_ms()
  redis.call('HSET', g, 'st', state, 'fin', now, 'free', free)
  local ret = redis.call('HGET', g, 'ret')
  fire(conts, outbox, KEYS[7], ARGV[2], state)
  local pg = redis.call('HGET', g, 'pg')
  if pg and pg ~= '' then
    redis.call('XADD', outbox, '*', 'g', pg, 'm', redis.call('HGET', g, 'pm'), 'st', state)
  end
  for _, k in ipairs({g, open, order, held, conts}) do
    redis.call('PEXPIRE', k, ret)
  end
  redis.call('PUBLISH', ARGV[1], 'group:' .. ARGV[3])
  wrote = 1
  st = state
end

if st == 'running' then
  local bad = tonumber(redis.call('HGET', g, 'bad'))
  if h[2] == '1' and bad > 0 and not h[5] then
    -- Fail fast: the group ends now; a drain cancels the open members.
    finish('failed')
    redis.call('XADD', outbox, '*', 'x', ARGV[2], 'why', 'group ' .. ARGV[2] .. ' failed fast: member ' .. redis.call('HGET', g, 'first') .. ' did not succeed')
  elseif redis.call('SCARD', open) == 0 then
    if h[5] then
      finish('cancelled')
    elseif bad > 0 then
      finish('failed')
    else
      finish('succeeded')
    end
  elseif lim > 0 and sealed and not h[5] then
    while free > 0 do
      local p = redis.call('ZPOPMIN', held)
      if not p[1] then break end
      redis.call('XADD', outbox, '*', 's', p[1] .. '|0', 'p', ARGV[2], 'st', 'released')
      free = free - 1
      wrote = 1
    end
  end
end
if lim > 0 then redis.call('HSET', g, 'free', free) end
return {st, wrote}
