-- Schedules the next attempt of a delivery whose attempt failed, unless another worker has claimed it since
-- (its lease ran out), in which case that worker's outcome decides.
--
-- KEYS[1]   the due schedule (ZSET), redis_keys.NOTIFY_DUE
-- KEYS[2]   the delivery (HASH), redis_keys.notify_delivery()
-- ARGV[1]   the delivery id
-- ARGV[2]   the attempt that failed (as returned by claim_due.lua)
-- ARGV[3]   when the next attempt is due, Unix ms
-- ARGV[4]   what went wrong (for the dead-letter record)
--
-- Returns 1 when rescheduled, 0 when the delivery is gone or was claimed again.
if redis.call('HGET', KEYS[2], 'attempts') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[2], 'last_error', ARGV[4])
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[1])
return 1
