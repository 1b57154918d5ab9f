-- Removes the consumers of a group that have been idle for long and hold no pending entries: every restart of a
-- replica joins as a new consumer, and the old names would pile up. Atomic, so a consumer cannot read an entry
-- between the check and the removal (removing a consumer drops its pending entries from the group).
--
-- KEYS[1]   the event stream, redis_keys.event_stream()
-- ARGV[1]   the consumer group
-- ARGV[2]   idle time, ms, beyond which a consumer without pending entries is removed
--
-- Returns the names of the removed consumers.
local removed = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local fields = {}
  for i = 1, #consumer, 2 do
    fields[consumer[i]] = consumer[i + 1]
  end
  if fields['pending'] == 0 and fields['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], fields['name'])
    table.insert(removed, fields['name'])
  end
end
return removed
