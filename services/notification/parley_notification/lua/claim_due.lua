-- Claims deliveries that are due: each is leased to the caller by moving its due time to now + lease, and its
-- attempt counter goes up. A worker that dies mid-attempt thus loses nothing: the delivery is due again when
-- the lease runs out, and another worker attempts it under the same idempotency key. The reply also says when
-- the schedule's earliest entry is due, so a worker that claimed less than it asked for knows how long it may
-- sleep without a second round trip.
--
-- KEYS[1]   the due schedule (ZSET), redis_keys.NOTIFY_DUE
-- ARGV[1]   now, Unix ms
-- ARGV[2]   lease, ms
-- ARGV[3]   most deliveries to claim
-- ARGV[4]   prefix of delivery hash keys (redis_keys.notify_delivery(""))
--
-- Returns the earliest due time left in the schedule after the claim (Unix ms, as a string; "" when it is
-- empty), then 8 values per claimed delivery: id, provider, type, data, occurred_at_ms, attempts (this attempt's
-- number), coalesced, created_at_ms. Deliveries are claimed by the hashes named from their ids (same slot).
local now = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local result = {''}
for _, id in ipairs(ids) do
  local key = ARGV[4] .. id
  local fields = redis.call('HMGET', key, 'provider', 'type', 'data', 'occurred_at_ms', 'coalesced', 'created_at_ms')
  if not fields[1] then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    local attempts = redis.call('HINCRBY', key, 'attempts', 1)
    for _, value in ipairs({id, fields[1], fields[2], fields[3], fields[4], attempts, fields[5], fields[6]}) do
      table.insert(result, value)
    end
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
  result[1] = first[2]
end
return result
