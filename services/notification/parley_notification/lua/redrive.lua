-- Puts dead-lettered deliveries back on the queue, due now, with their attempts reset and their ids (so their
-- idempotency keys) unchanged; their dead-letter entries are deleted.
--
-- KEYS[1]   the due schedule (ZSET), redis_keys.NOTIFY_DUE
-- KEYS[2]   queued deliveries per provider (HASH), redis_keys.NOTIFY_DEPTH
-- KEYS[3]   the dead-letter stream, redis_keys.NOTIFY_DEAD_LETTERS
-- ARGV[1]   now, Unix ms
-- ARGV[2]   prefix of delivery hash keys (redis_keys.notify_delivery("")); the hashes share the {queue} slot
-- ARGV[3]   strict: "1" refuses the whole call when an entry is missing, "0" skips missing entries
-- ARGV[4..] dead-letter entry ids
--
-- Returns {-1, index of the first missing entry} when strict and one is missing (nothing changed), otherwise
-- {number redriven}.
local entries = {}
for i = 4, #ARGV do
  local found = redis.call('XRANGE', KEYS[3], ARGV[i], ARGV[i])
  if #found == 0 then
    if ARGV[3] == '1' then
      return {-1, i - 3}
    end
  else
    table.insert(entries, found[1])
  end
end
local redriven = 0
for _, entry in ipairs(entries) do
  local fields = {}
  local raw = entry[2]
  for j = 1, #raw, 2 do
    fields[raw[j]] = raw[j + 1]
  end
  local key = ARGV[2] .. fields['delivery_id']
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'provider', fields['provider'], 'type', fields['type'], 'data', fields['data'],
      'occurred_at_ms', fields['occurred_at_ms'], 'attempts', 0, 'created_at_ms', fields['created_at_ms'],
      'coalesced', fields['coalesced'], 'last_error', fields['last_error'])
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]), fields['delivery_id'])
    redis.call('HINCRBY', KEYS[2], fields['provider'], 1)
    redriven = redriven + 1
  end
  redis.call('XDEL', KEYS[3], entry[1])
end
return {redriven}
