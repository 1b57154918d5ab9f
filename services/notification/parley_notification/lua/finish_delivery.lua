-- Ends a delivery the provider accepted: drops its hash and its schedule entry. Idempotent: when a lease ran out
-- and two workers both delivered, the second call finds nothing and returns 0.
--
-- KEYS[1]   the due schedule (ZSET), redis_keys.NOTIFY_DUE
-- KEYS[2]   queued deliveries per provider (HASH), redis_keys.NOTIFY_DEPTH
-- KEYS[3]   the delivery (HASH), redis_keys.notify_delivery()
-- ARGV[1]   the delivery id
--
-- Returns 1 when the delivery was ended now, 0 when it was already gone.
local provider = redis.call('HGET', KEYS[3], 'provider')
if not provider then
  return 0
end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[2], provider, -1) <= 0 then
  redis.call('HDEL', KEYS[2], provider)
end
return 1
