-- Stores one stanza for some devices of one user, once: a resent stanza (same sender, same id) stores nothing.
--
-- KEYS[1]      the acceptance marker for this user, sender and stanza id (STRING), redis_keys.accepted()
-- KEYS[2..n+1] the mailboxes (STREAM) of the user's devices the stanza goes to, redis_keys.mailbox()
-- KEYS[n+2..2n+1] the presence keys (STRING) of the same devices, redis_keys.presence()
-- ARGV[1]      the stanza bytes (as the relay forwards them)
-- ARGV[2]      acceptance time, Unix ms
-- ARGV[3]      the stanza id
-- ARGV[4]      the sending device's address
-- ARGV[5]      "1" when the sender asked for receipts, else "0"
-- ARGV[6]      retention, ms: the marker's TTL, and entries older than this are trimmed from the mailboxes
-- ARGV[7]      backlog cap: the most undelivered entries one mailbox may hold (0: no cap)
--
-- The caller publishes the mailboxes' hints after the script (one per mailbox for a whole batch of stanzas).
-- Returns, when stored, {1, ts, the n entry ids in mailbox order, then offline device index, its mailbox length,
-- ...} (indexes are 1-based positions among the mailboxes of devices without presence, for "message waiting"
-- events); {0, ts of the first acceptance} when the stanza was stored before; {2, ts, index of a full mailbox, its
-- length} when a mailbox is at the cap, and then nothing was written. Everything happens in one atomic step, so a
-- retry after a crash either finds the marker and all copies, or neither.
local stored = redis.call('GET', KEYS[1])
if stored then
  return {0, tonumber(stored)}
end
local n = (#KEYS - 1) / 2
local ts = tonumber(ARGV[2])
local retention = tonumber(ARGV[6])
local cap = tonumber(ARGV[7])
if cap > 0 then
  for i = 1, n do
    local length = redis.call('XLEN', KEYS[1 + i])
    if length >= cap then
      return {2, ts, i, length}
    end
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', retention)
local result = {1, ts}
local offline = {}
for i = 1, n do
  local mailbox = KEYS[1 + i]
  table.insert(result, redis.call('XADD', mailbox, 'MINID', '~', ts - retention, '*',
    's', ARGV[1], 't', ARGV[2], 'm', ARGV[3], 'f', ARGV[4], 'r', ARGV[5]))
  -- Streams would otherwise live forever once emptied by acks; the TTL outlives the oldest possible entry.
  redis.call('PEXPIRE', mailbox, retention)
  if redis.call('EXISTS', KEYS[1 + n + i]) == 0 then
    table.insert(offline, i)
    table.insert(offline, redis.call('XLEN', mailbox))
  end
end
for _, value in ipairs(offline) do
  table.insert(result, value)
end
return result
