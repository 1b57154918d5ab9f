-- Registers a new device for an existing user, bounded per user, assigning the next device id.
--
-- KEYS[1]  the user's record (HASH), redis_keys.user()
-- KEYS[2]  the user's devices (HASH device id -> "<registration id>:<created at, Unix ms>"),
--          redis_keys.user_devices()
-- ARGV[1]  maximum devices per user
-- ARGV[2]  the device's value, "<registration id>:<created at, Unix ms>"
--
-- Returns the new device id, or -1 when the user does not exist, or -2 when the user has the maximum number
-- of devices. Device ids are never reused while the user exists (`next_device` only grows), so a stale
-- device id in a sender's list can never address a new device by accident.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[1]) then
  return -2
end
local device_id = redis.call('HINCRBY', KEYS[1], 'next_device', 1)
redis.call('HSET', KEYS[2], device_id, ARGV[2])
return device_id
