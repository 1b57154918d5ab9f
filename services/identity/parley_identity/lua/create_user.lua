-- Creates a user record unless it exists.
--
-- KEYS[1]  the user's record (HASH), redis_keys.user()
-- ARGV[1]  creation time, Unix ms
-- ARGV[2]  initial consent state (ConsentState OFF)
-- ARGV[3]  initial inbox mode (InboxMode SEPARATE)
--
-- Returns 1 when created, 0 when the user already existed (nothing changed).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'created_at_ms', ARGV[1], 'consent', ARGV[2], 'inbox', ARGV[3],
  'consent_at_ms', ARGV[1], 'next_device', 0)
return 1
