-- Puts a provider's circuit breaker back as it was before check_provider.lua counted a refusal: the undo of a
-- speculative check in a batch (see store.py, check_send_many).
--
-- KEYS[1]  the provider's circuit breaker (HASH `since`, `failures`, `open_until`), redis_keys.provider_breaker()
-- ARGV[1]  `since` before ('' when missing)
-- ARGV[2]  `failures` before ('' when missing)
-- ARGV[3]  `open_until` before ('' when missing)
-- ARGV[4]  its expiry time before, Unix ms (PEXPIRETIME: -2 when there was no key, -1 when it had no expiry)
-- ARGV[5], ARGV[6], ARGV[7]  `since`, `failures`, `open_until` as the count left them
--
-- Returns 1 when restored, 0 when the breaker is no longer as the count left it: another call changed it since
-- (counted its own refusal, or opened it), and that change is kept rather than overwritten; the one speculated
-- refusal then stays counted, which errs toward cutting a pushing provider off. Undoing a batch's counts newest
-- first restores each in turn, as each finds the breaker as the next newer count's undo left it.
local now = redis.call('HMGET', KEYS[1], 'since', 'failures', 'open_until')
for index = 1, 3 do
  if (now[index] or '') ~= ARGV[index + 4] then
    return 0
  end
end
redis.call('DEL', KEYS[1])
if ARGV[4] == '-2' then
  return 1
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
return 1
