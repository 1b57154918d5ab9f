-- Gives back the token and quota check_provider.lua took for a send that another part of the decision refused.
--
-- KEYS[1]  the provider's send bucket (HASH `tokens`, `ts`), redis_keys.rate_limit(provider, "provider_send")
-- KEYS[2]  the provider's quota (HASH `window`, `used`), redis_keys.provider_quota()
-- ARGV[1]  bucket capacity
-- ARGV[2]  the quota window check_provider.lua charged (its third result)
-- ARGV[3]  the device copies it charged
--
-- Returns 0. The token goes back as in refund_sender.lua; the copies go back only to the window they were
-- taken from (a window that has ended since is left alone).
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens ~= nil then
  redis.call('HSET', KEYS[1], 'tokens', tostring(math.min(tonumber(ARGV[1]), tokens + 1)))
end
if redis.call('HGET', KEYS[2], 'window') == ARGV[2] then
  local used = tonumber(redis.call('HGET', KEYS[2], 'used'))
  redis.call('HSET', KEYS[2], 'used', math.max(0, used - tonumber(ARGV[3])))
end
return 0
