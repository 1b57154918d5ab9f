-- Stores stanzas of one sending device for the same devices of one user, in order, each once: a resent stanza
-- (same sender, same id) stores nothing. The outcome is the same as storing them one after another, each in its
-- own atomic step; one call per run of stanzas spares Redis a script call, an expiry and a presence check per
-- stanza.
--
-- KEYS[1..n]          the mailboxes (STREAM) of the user's devices the stanzas go to, redis_keys.mailbox()
-- KEYS[n+1..2n]       the presence keys (STRING) of the same devices, redis_keys.presence()
-- KEYS[2n+1..2n+m]    each stanza's acceptance marker for this user, sender and stanza id (STRING),
--                     redis_keys.accepted()
-- ARGV[1]             the number of mailboxes, n
-- ARGV[2]             retention, ms: the markers' TTL, and entries older than this are trimmed from the mailboxes
-- ARGV[3]             backlog cap: the most undelivered entries one mailbox may hold (0: no cap)
-- ARGV[4]             the sending device's address
-- ARGV[5 + 4(j-1)..]  per stanza j: its bytes (as the relay forwards them), acceptance time (Unix ms), its id, and
--                     "1" when the sender asked for receipts, else "0"
--
-- The caller publishes the mailboxes' hints after the script (one per mailbox for a whole frame of stanzas).
-- Returns one reply per stanza, in order: when stored, {1, ts, the n entry ids in mailbox order, then offline
-- device index, its mailbox length, ...} (indexes are 1-based mailbox positions of devices without presence, for
-- "message waiting" events); {0, ts of the first acceptance} when the stanza was stored before; {2, ts, index of
-- a full mailbox, its length} when a mailbox is at the cap, and then nothing was written for that stanza. A retry
-- after a crash finds each stanza's marker together with all its copies, or neither.
local n = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local sender = ARGV[4]
local lengths = {}
local online = {}
for i = 1, n do
  -- Within one atomic call a mailbox grows only by what this call adds, and presence does not change.
  lengths[i] = redis.call('XLEN', KEYS[i])
  online[i] = redis.call('EXISTS', KEYS[n + i]) == 1
end
local replies = {}
local written = false
for j = 1, #KEYS - 2 * n do
  local marker = KEYS[2 * n + j]
  local base = 4 + 4 * (j - 1)
  local ts = tonumber(ARGV[base + 2])
  local stored = redis.call('GET', marker)
  local reply
  if stored then
    reply = {0, tonumber(stored)}
  elseif cap > 0 then
    for i = 1, n do
      if lengths[i] >= cap then
        reply = {2, ts, i, lengths[i]}
        break
      end
    end
  end
  if reply == nil then
    redis.call('SET', marker, ARGV[base + 2], 'PX', retention)
    reply = {1, ts}
    local offline = {}
    for i = 1, n do
      reply[#reply + 1] = redis.call('XADD', KEYS[i], 'MINID', '~', ts - retention, '*',
        's', ARGV[base + 1], 't', ARGV[base + 2], 'm', ARGV[base + 3], 'f', sender, 'r', ARGV[base + 4])
      lengths[i] = lengths[i] + 1
      if not online[i] then
        offline[#offline + 1] = i
        offline[#offline + 1] = lengths[i]
      end
    end
    for _, value in ipairs(offline) do
      reply[#reply + 1] = value
    end
    written = true
  end
  replies[j] = reply
end
if written then
  -- Streams would otherwise live forever once emptied by acks; the TTL outlives the oldest possible entry.
  for i = 1, n do
    redis.call('PEXPIRE', KEYS[i], retention)
  end
end
return replies
