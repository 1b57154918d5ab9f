-- Counts a verified report against a sender and restricts the sender when enough distinct users reported.
--
-- KEYS[1]  the sender's verified reporters (ZSET, scored by Unix ms), redis_keys.verified_reporters()
-- KEYS[2]  the sender's restriction (STRING with TTL), redis_keys.sender_restriction()
-- ARGV[1]  the reporter's address
-- ARGV[2]  now, Unix ms
-- ARGV[3]  the counting window, ms (older reports stop counting)
-- ARGV[4]  distinct reporters within the window that restrict the sender (0 = never automatically)
-- ARGV[5]  how long a restriction lasts, ms
-- ARGV[6]  the restriction's value (why)
--
-- Returns 1 when this report restricted the sender, else 0. Counting distinct reporters means one user
-- reporting many messages counts once; a repeat by the same reporter only refreshes its time (idempotent).
local now = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local threshold = tonumber(ARGV[4])
if threshold > 0 and redis.call('ZCARD', KEYS[1]) >= threshold and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[6], 'PX', ARGV[5])
  return 1
end
return 0
