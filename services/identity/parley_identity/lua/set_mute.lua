-- Sets (or replaces) one mute of a user, keeping the user's mutes bounded.
--
-- KEYS[1]  the user's record (HASH), redis_keys.user()
-- KEYS[2]  the user's mutes (HASH: "user:<address>" or "provider:<id>" -> "<until ms>:<created ms>"),
--          redis_keys.user_mutes()
-- ARGV[1]  the mute's field
-- ARGV[2]  its value, "<until ms>:<created ms>" (until 0 = for ever)
-- ARGV[3]  the most mutes a user may hold
-- ARGV[4]  now, Unix ms (mutes that ended by then are dropped first, so they never count)
--
-- Returns 1 when set, -1 when there is no such user, -2 when the user holds the maximum of other mutes.
-- Running it twice sets the same value (idempotent).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local now = tonumber(ARGV[4])
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local untils = tonumber(string.match(entries[i + 1], '^(%d+):'))
  if untils ~= nil and untils ~= 0 and untils <= now then
    redis.call('HDEL', KEYS[2], entries[i])
  end
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[3]) then
  return -2
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
