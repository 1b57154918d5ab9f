-- The sender's provider's part of send decisions: circuit breaker, quota and token bucket, all or nothing per send.
--
-- KEYS[1]  the provider's send bucket (HASH `tokens`, `ts`), redis_keys.rate_limit(provider, "provider_send")
-- KEYS[2]  the provider's quota (HASH `window`, `used`), redis_keys.provider_quota()
-- KEYS[3]  the provider's circuit breaker (HASH `since`, `failures`, `open_until`), redis_keys.provider_breaker()
-- ARGV[1]  bucket capacity (messages, float)
-- ARGV[2]  bucket refill rate (messages per second, float > 0)
-- ARGV[3]  quota: device copies per window (0 = unlimited)
-- ARGV[4]  quota window, ms
-- ARGV[5]  breaker threshold: refusals within the breaker window that open it (0 = no breaker)
-- ARGV[6]  breaker window, ms
-- ARGV[7]  breaker cooldown (how long it stays open), ms
-- ARGV[8..] each send's device copies (fan-out, >= 1), in order: one call checks every send of a batch's wave
--          from this provider, each exactly as if checked alone after the one before (at one server time)
--
-- Returns one reply per send, in order: {outcome, retry_after_ms, quota window}; outcome 0 = allowed (a token and
-- `fan-out` quota taken from that window), 1 = the breaker is open, 2 = the quota is used up, 3 = the bucket is
-- empty. A quota or bucket refusal takes nothing but counts toward the breaker: a provider that keeps pushing past
-- its limits (a retry storm, a compromised provider) is cut off for the cooldown, during which its sends cost one
-- key read. Server time throughout. When another part of the decision refuses the send, refund_provider.lua gives
-- back what an allowed send took. A refusal that counted toward the breaker appends the breaker as it was before,
-- {since, failures, open_until ('' for a missing field), expiry time (PEXPIRETIME: -2 no key, -1 none)}, then as
-- it is after {since, failures, open_until}, so that restore_breaker.lua can undo the count when a batch's
-- speculative tail is rolled back (and leave the breaker alone if another call changed it since).
--
-- The bucket and the quota are read once and written once, after the last send: every send of the call sees the
-- level the sends before it left (kept here, rounded as a write and re-read would round it), and the hashes end
-- as they would after one call per send, for a fraction of the commands.
local now_parts = redis.call('TIME')
local now_ms = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local now = now_ms / 1000

local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local quota, quota_window = tonumber(ARGV[3]), tonumber(ARGV[4])
local threshold, breaker_window, cooldown = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local window = math.floor(now_ms / quota_window)
local open_until = tonumber(redis.call('HGET', KEYS[3], 'open_until') or '0')

local function refuse(outcome, retry_after_ms)
  if threshold > 0 then
    local before = redis.call('HMGET', KEYS[3], 'since', 'failures', 'open_until')
    local expires_at = redis.call('PEXPIRETIME', KEYS[3])
    local since = tonumber(before[1] or '0')
    local failures = 1
    if now_ms - since < breaker_window then
      failures = redis.call('HINCRBY', KEYS[3], 'failures', 1)
    else
      redis.call('HSET', KEYS[3], 'since', now_ms, 'failures', 1)
    end
    if failures >= threshold then
      open_until = now_ms + cooldown
      redis.call('HSET', KEYS[3], 'open_until', open_until, 'failures', 0, 'since', 0)
      redis.call('PEXPIRE', KEYS[3], cooldown + breaker_window)
    else
      redis.call('PEXPIRE', KEYS[3], breaker_window + cooldown)
    end
    local after = redis.call('HMGET', KEYS[3], 'since', 'failures', 'open_until')
    return {
      outcome, retry_after_ms, 0,
      before[1] or '', before[2] or '', before[3] or '', expires_at,
      after[1] or '', after[2] or '', after[3] or '',
    }
  end
  return {outcome, retry_after_ms, 0}
end

local used = 0
if quota > 0 then
  local state = redis.call('HMGET', KEYS[2], 'window', 'used')
  if tonumber(state[1]) == window then
    used = tonumber(state[2])
  end
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
if tokens == nil then
  tokens = capacity
else
  tokens = math.min(capacity, tokens + math.max(0, now - tonumber(state[2])) * rate)
end

local replies = {}
local taken = false
for index = 8, #ARGV do
  local fan_out = tonumber(ARGV[index])
  if open_until > now_ms then
    replies[#replies + 1] = {1, open_until - now_ms, 0}
  elseif quota > 0 and used + fan_out > quota then
    replies[#replies + 1] = refuse(2, (window + 1) * quota_window - now_ms)
  elseif tokens < 1 then
    replies[#replies + 1] = refuse(3, math.ceil((1 - tokens) / rate * 1000))
  else
    tokens = tonumber(tostring(tokens - 1))
    used = used + fan_out
    taken = true
    replies[#replies + 1] = {0, 0, window}
  end
end
if taken then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
  if quota > 0 then
    redis.call('HSET', KEYS[2], 'window', window, 'used', used)
    redis.call('PEXPIRE', KEYS[2], (window + 1) * quota_window - now_ms + 1000)
  end
end
return replies
