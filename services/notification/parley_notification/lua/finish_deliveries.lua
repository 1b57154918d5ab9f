-- Ends deliveries the providers accepted: drops their hashes and schedule entries. One call ends every delivery
-- that completed while the previous call ran, so accepted deliveries cost a fraction of a round trip each.
-- Idempotent: when a lease ran out and two workers both delivered, the second call finds nothing.
--
-- KEYS[1]   the due schedule (ZSET), redis_keys.NOTIFY_DUE
-- KEYS[2]   queued deliveries per provider (HASH), redis_keys.NOTIFY_DEPTH
-- ARGV[1]   prefix of delivery hash keys (redis_keys.notify_delivery(""))
-- ARGV[1+k] for each delivery k = 1..n: its id. Its hash is named from it, in the same slot (as in claim_due.lua):
--           passing n more key names would cost the caller more than the whole script.
--
-- Returns, per delivery, 1 when it was ended now, 0 when it was already gone.
local result = {}
for k = 2, #ARGV do
  local key = ARGV[1] .. ARGV[k]
  local provider = redis.call('HGET', key, 'provider')
  if provider then
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[1], ARGV[k])
    if redis.call('HINCRBY', KEYS[2], provider, -1) <= 0 then
      redis.call('HDEL', KEYS[2], provider)
    end
    table.insert(result, 1)
  else
    table.insert(result, 0)
  end
end
return result
