-- Creates or updates a provider if nobody changed it meanwhile, and announces the change to every replica.
--
-- KEYS[1]  the provider (HASH: blob, version), redis_keys.provider()
-- KEYS[2]  the provider index (SET), redis_keys.PROVIDER_INDEX
-- ARGV[1]  the version the caller read: 0 to create (the provider must not exist yet)
-- ARGV[2]  the new serialized parley.identity.v1.Provider
-- ARGV[3]  the provider id
-- ARGV[4]  the pub/sub channel for changes, redis_keys.PROVIDER_CHANGES_CHANNEL
--
-- Returns the new version, or -1 when the stored version differs from ARGV[1] (the caller re-reads and
-- decides again). Status transitions are checked by the caller on the version it read, so a concurrent
-- change can never slip an invalid transition through.
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) then
  return -1
end
local version = current + 1
redis.call('HSET', KEYS[1], 'blob', ARGV[2], 'version', version)
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return version
