-- Reads the push tokens of many devices in one command. Single-node Redis only: the devices' hashes lie in their
-- users' slots, so on a cluster the store sends one HGET per device in a pipeline instead. One command costs the
-- caller a seventh of a pipeline's per-command work, and routing reads a token for every wake-up.
--
-- KEYS[k]   for each device k = 1..n: its user's push targets (HASH), redis_keys.push_targets()
-- ARGV[k]   the device's id, in the same order
--
-- Returns, per device, its token, or nil when none is registered.
local tokens = {}
for k = 1, #KEYS do
  tokens[k] = redis.call('HGET', KEYS[k], ARGV[k])
end
return tokens
