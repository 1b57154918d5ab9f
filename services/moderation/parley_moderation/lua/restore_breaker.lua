-- Puts a provider's circuit breaker back as it was before check_provider.lua counted a refusal: the undo of a
-- speculative check in a batch (see store.py, check_send_many).
--
-- KEYS[1]  the provider's circuit breaker (HASH `since`, `failures`, `open_until`), redis_keys.provider_breaker()
-- ARGV[1]  `since` before ('' when missing)
-- ARGV[2]  `failures` before ('' when missing)
-- ARGV[3]  `open_until` before ('' when missing)
-- ARGV[4]  its expiry time before, Unix ms (PEXPIRETIME: -2 when there was no key, -1 when it had no expiry)
--
-- Returns 0. Restoring the same snapshot twice leaves the same breaker (idempotent).
redis.call('DEL', KEYS[1])
if ARGV[4] == '-2' then
  return 0
end
local names = {'since', 'failures', 'open_until'}
for index, name in ipairs(names) do
  if ARGV[index] ~= '' then
    redis.call('HSET', KEYS[1], name, ARGV[index])
  end
end
if tonumber(ARGV[4]) >= 0 then
  -- An expiry time already past deletes the key, as Redis would have by now.
  redis.call('PEXPIREAT', KEYS[1], ARGV[4])
end
return 0
