-- Moves a delivery that will not succeed (attempts used up, or refused for good) to the dead-letter stream,
-- with everything needed to redrive it, unless another worker has claimed it since.
--
-- KEYS[1]   the due schedule (ZSET), redis_keys.NOTIFY_DUE
-- KEYS[2]   queued deliveries per provider (HASH), redis_keys.NOTIFY_DEPTH
-- KEYS[3]   the dead-letter stream, redis_keys.NOTIFY_DEAD_LETTERS
-- KEYS[4]   the delivery (HASH), redis_keys.notify_delivery()
-- ARGV[1]   the delivery id
-- ARGV[2]   the attempt that failed (as returned by claim_due.lua)
-- ARGV[3]   what went wrong
-- ARGV[4]   now, Unix ms
-- ARGV[5]   approximate length cap of the dead-letter stream
--
-- Returns the dead-letter entry id, or "" when the delivery is gone or was claimed again.
if redis.call('HGET', KEYS[4], 'attempts') ~= ARGV[2] then
  return ''
end
local f = redis.call('HMGET', KEYS[4], 'provider', 'type', 'data', 'occurred_at_ms', 'coalesced', 'created_at_ms')
local entry = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'delivery_id', ARGV[1], 'provider', f[1],
  'type', f[2], 'data', f[3], 'occurred_at_ms', f[4], 'coalesced', f[5], 'created_at_ms', f[6],
  'attempts', ARGV[2], 'last_error', ARGV[3], 'at_ms', ARGV[4])
redis.call('DEL', KEYS[4])
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('HINCRBY', KEYS[2], f[1], -1) <= 0 then
  redis.call('HDEL', KEYS[2], f[1])
end
return entry
