-- enqueue20.lua: adds one auto-keyed task under the entry id the client chose;
-- a resend of the call adds nothing and answers the first run's id.
-- KEYS[1]  the queue's stream
-- KEYS[2]  the marker of this call (op id chosen by the client), used only
--          on the fallback path
-- KEYS[3]  the task hash and KEYS[4] the result key the task has under the
--          chosen id (a cancel or a finished run leaves one)
-- KEYS[5..] markers of earlier calls of the client to this queue whose
--          replies it read: each is set to expire after ARGV[4]
-- ARGV[1]  the entry id the client chose, ms-seq: unique to this call (see
--          store.EntryIDs: the client never gives an id twice, and ids of
--          other producers do not meet it)
-- ARGV[2]  envelope
-- ARGV[3]  how long the op marker lives, ms (fallback path)
-- ARGV[4]  the grace of the earlier markers, ms
-- Returns: the task's entry id: ARGV[1] on the fast path, else the id XADD
-- gave on the fallback path. A resend returns the first run's answer.
-- The fast path is one XADD. XADD of an explicit id fails when the stream's
-- last id is equal or greater, which is so for a resend of a call whose
-- XADD went through (the last id never goes back, whatever deletes the
-- entry), and for a first run behind another producer. A failed XADD
-- (whatever the error: at maxmemory a resend's XADD is refused too) looks
-- for this call's effect first: the entry still there with our envelope,
-- or a record of the task under that id (every way an auto-keyed entry
-- leaves the stream writes one, and the client takes this way only for a
-- task whose record outlives the resend window). Then it is a resend.
-- Else a stream past the id means a first run behind another producer,
-- which takes the marker path: GET marker, XADD *, SET marker, safe to
-- resend in its turn; any other error goes to the caller.
local function shorten()
  for i = 5, #KEYS do
    redis.call('PEXPIRE', KEYS[i], ARGV[4])
  end
end
local r = redis.pcall('XADD', KEYS[1], ARGV[1], 'm', ARGV[2])
if type(r) ~= 'table' then
  shorten()
  return r
end
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])[1]
if e then
  if e[2][1] == 'm' and e[2][2] == ARGV[2] then return ARGV[1] end
elseif redis.call('EXISTS', KEYS[3], KEYS[4]) > 0 then
  return ARGV[1]
end
if not (r.err and string.find(r.err, 'equal or smaller', 1, true)) then
  return r -- a refusal (OOM, wrong type): the caller gets the error
end
local prev = redis.call('GET', KEYS[2])
if prev then return prev end
local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
redis.call('SET', KEYS[2], id, 'PX', ARGV[3])
shorten()
return id
