-- groupcont.lua: registers a continuation on a group, or, if the group has
-- ended, puts it straight into the outbox (one script decides, so a
-- registration racing the group's end is neither lost nor doubled).
-- KEYS[1]  group hash, KEYS[2] its continuations, KEYS[3] home queue's outbox
-- ARGV[1]  spec "<queue>/<key>|<only on success 1/0>", ARGV[2] public group id
-- Returns: 'registered', 'fired' (drain the outbox) or 'unknown'.
-- A replay (or a second registration of the same continuation) lists the
-- spec once; in the 'fired' case it may add a second outbox entry, which
-- activate.lua makes a no-op.
local st = redis.call('HGET', KEYS[1], 'st')
if not st then return 'unknown' end
if st == 'running' then
  if not redis.call('LPOS', KEYS[2], ARGV[1]) then redis.call('RPUSH', KEYS[2], ARGV[1]) end
  -- A group not sealed yet expires unless completed: so does this list.
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
  return 'registered'
end
redis.call('XADD', KEYS[3], '*', 's', ARGV[1], 'p', ARGV[2], 'st', st)
return 'fired'
