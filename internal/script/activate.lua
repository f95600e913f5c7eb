-- activate.lua: moves a waiting continuation into its queue's stream once its
-- parent ended, exactly once; or cancels it when it continues only on success
-- and the parent did not succeed.
-- KEYS[1]  task hash, KEYS[2] the queue's stream, KEYS[3] continuations of
-- this task, KEYS[4] this queue's outbox, KEYS[5] this queue's hooks
-- ARGV[1]  task key, ARGV[2] '1' to continue only on success, ARGV[3] parent
-- id, ARGV[4] parent's final state, ARGV[5] done channel, ARGV[6] retention
-- ms, ARGV[7] this task's id
-- Returns: 1 activated, 2 cancelled (its own continuations, and its group's
-- notice, went to this queue's outbox), 0 nothing to do (already activated or ended: a replay).
local tk = KEYS[1]
if redis.call('HGET', tk, 'st') ~= 'waiting' then return 0 end
if ARGV[2] == '1' and ARGV[4] ~= 'succeeded' then
  local now = now_ms()
  redis.call('HSET', tk, 'st', 'cancelled', 'err', 'parent ' .. ARGV[3] .. ' ended ' .. ARGV[4], 'fin', now)
  redis.call('PEXPIRE', tk, ARGV[6])
  if redis.call('HDEL', tk, 'w') == 1 then
    redis.call('PUBLISH', ARGV[5], ARGV[1])
  end
  fire(KEYS[3], KEYS[4], KEYS[5], ARGV[7], 'cancelled')
  member_ended(tk, KEYS[4], ARGV[7], 'cancelled')
  return 2
end
local id = redis.call('XADD', KEYS[2], '*', 'm', redis.call('HGET', tk, 'm'))
redis.call('HSET', tk, 'st', 'pending', 'e', id)
redis.call('HDEL', tk, 'm')
return 1
