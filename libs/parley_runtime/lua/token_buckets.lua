-- Token buckets taken together: one token from every bucket, or, when any of them is short, from none. A call
-- refused by one limit is not charged to the others.
--
-- KEYS[i]       bucket i (HASH with fields `tokens` and `ts`), all in one slot: redis_keys.grouped_rate_limit()
-- ARGV[2i-1]    capacity of bucket i (max tokens, float)
-- ARGV[2i]      refill rate of bucket i (tokens per second, float > 0)
--
-- Returns {0, 0} when every bucket gave its token, else {i, retry_after_ms}: the first bucket that refused and
-- the longest wait among those that refused. A refusal writes nothing (a bucket's refill is computed from its
-- last take whenever it is read). Buckets expire once they would be full again, and time comes from the Redis
-- server, as in token_bucket.lua.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local tokens = {}
local refused, retry_after_ms = 0, 0
for i = 1, #KEYS do
  local capacity = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local available = tonumber(state[1])
  local ts = tonumber(state[2])
  if available == nil then
    available = capacity
    ts = now
  end
  available = math.min(capacity, available + math.max(0, now - ts) * rate)
  if available < 1 then
    if refused == 0 then
      refused = i
    end
    retry_after_ms = math.max(retry_after_ms, math.ceil((1 - available) / rate * 1000))
  end
  tokens[i] = available - 1
end
if refused ~= 0 then
  return {refused, retry_after_ms}
end
for i = 1, #KEYS do
  local capacity = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i])
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i]), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((capacity - tokens[i]) / rate * 1000) + 1000)
end
return {0, 0}
