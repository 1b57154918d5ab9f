-- Changes a user's interop consent atomically with its allowed-provider set.
--
-- KEYS[1]  the user's record (HASH: consent, inbox, consent_at_ms, ...), redis_keys.user()
-- KEYS[2]  the user's allowed providers (SET), redis_keys.user_allowed_providers()
-- ARGV[1]  operation: "enable", "update" or "disable"
-- ARGV[2]  new inbox mode (InboxMode number as text), or "" to keep the current one
-- ARGV[3]  "1" to replace the allowed providers with ARGV[5..], "0" to keep them
-- ARGV[4]  change time, Unix ms
-- ARGV[5..] allowed provider ids
--
-- Consent states are ConsentState numbers: 1 OFF, 2 ENABLED, 3 DISABLED.
-- Returns {status, state, inbox, allowed...}; status 0 = done, -1 = no such user, -2 = not allowed in the
-- current state (update or disable while not ENABLED). Re-running an operation is harmless (idempotent).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1}
end
local op = ARGV[1]
local state = tonumber(redis.call('HGET', KEYS[1], 'consent'))
if (op == 'update' or op == 'disable') and state ~= 2 then
  return {-2, state}
end
if op == 'enable' or op == 'update' then
  if op == 'enable' then
    state = 2
  end
  if ARGV[3] == '1' then
    redis.call('DEL', KEYS[2])
    for i = 5, #ARGV do
      redis.call('SADD', KEYS[2], ARGV[i])
    end
  end
elseif op == 'disable' then
  state = 3
end
redis.call('HSET', KEYS[1], 'consent', state, 'consent_at_ms', ARGV[4])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'inbox', ARGV[2])
end
local result = {0, state, tonumber(redis.call('HGET', KEYS[1], 'inbox'))}
for _, provider in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  table.insert(result, provider)
end
return result
