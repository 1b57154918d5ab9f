-- Adds a block, bounded: a user may hold at most ARGV[2] blocks.
--
-- KEYS[1]  the blocking user's blocks (ZSET, all scores 0), redis_keys.blocks()
-- ARGV[1]  the blocked user's address
-- ARGV[2]  most blocks a user may hold
--
-- Returns 1 when added, 0 when it was already there (idempotent), -1 when the user holds the maximum already.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return -1
end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
return 1
