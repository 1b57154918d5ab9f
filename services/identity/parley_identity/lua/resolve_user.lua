-- Reads what reachability decisions need about one user, in one round trip.
--
-- KEYS[1]  the user's record (HASH), redis_keys.user()
-- KEYS[2]  the user's allowed providers (SET), redis_keys.user_allowed_providers()
-- KEYS[3]  the user's devices (HASH), redis_keys.user_devices()
-- KEYS[4]  the user's mutes (HASH), redis_keys.user_mutes()
-- ARGV[1]  the asking provider id
-- ARGV[2]  the mute field of the asking user ("user:<address>")
-- ARGV[3]  the mute field of the asking provider ("provider:<id>")
--
-- Returns {exists (0|1), consent state, inbox mode, asking provider allowed (0|1), the asking user's mute value
-- ("" when none), the asking provider's mute value ("" when none), device id, device value, ...}.
-- Every case runs the same commands, so the answer's timing does not tell absent users from present ones.
local exists = redis.call('EXISTS', KEYS[1])
local fields = redis.call('HMGET', KEYS[1], 'consent', 'inbox')
local allowed = redis.call('SISMEMBER', KEYS[2], ARGV[1])
local mutes = redis.call('HMGET', KEYS[4], ARGV[2], ARGV[3])
local result = {exists, tonumber(fields[1]) or 0, tonumber(fields[2]) or 0, allowed, mutes[1] or '', mutes[2] or ''}
for _, item in ipairs(redis.call('HGETALL', KEYS[3])) do
  table.insert(result, item)
end
return result
