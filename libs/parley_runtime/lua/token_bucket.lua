-- Token bucket: takes `cost` tokens if available, in one atomic step.
--
-- KEYS[1]  the bucket (HASH with fields `tokens` and `ts`), from redis_keys.rate_limit()
-- ARGV[1]  capacity (max tokens, float)
-- ARGV[2]  refill rate (tokens per second, float > 0)
-- ARGV[3]  cost (tokens this call takes, float)
--
-- Returns {allowed (1|0), retry_after_ms}. The bucket expires once it would be full again, so idle subjects
-- cost no memory. Time comes from the Redis server (TIME), so replicas with skewed clocks agree.
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000

local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)

local allowed = 0
local retry_after_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry_after_ms = math.ceil((cost - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return {allowed, retry_after_ms}
