-- Gives back the tokens check_sender.lua took for a send that another part of the decision refused.
--
-- KEYS[1]  the sender's send bucket (HASH `tokens`, `ts`), redis_keys.rate_limit(sender, "send")
-- KEYS[2]  the sender's first-contact bucket, redis_keys.rate_limit(sender, "first_contact")
-- ARGV[1]  send bucket capacity
-- ARGV[2]  first-contact bucket capacity
-- ARGV[3]  1 when check_sender.lua took a first-contact token too, else 0
--
-- Returns 0. A token goes back to the level the bucket had at its last update (`ts`), capped at capacity, so
-- the refill arithmetic stays exact; a bucket that has expired meanwhile was full again and is left alone.
local function give_back(key, capacity)
  local tokens = tonumber(redis.call('HGET', key, 'tokens'))
  if tokens ~= nil then
    redis.call('HSET', key, 'tokens', tostring(math.min(capacity, tokens + 1)))
  end
end
give_back(KEYS[1], tonumber(ARGV[1]))
if ARGV[3] == '1' then
  give_back(KEYS[2], tonumber(ARGV[2]))
end
return 0
