-- Publishes a device's keys: identity key, signed prekey, last-resort PQ prekey, one-time prekeys and one-time PQ
-- prekeys.
--
-- KEYS[1]  the device's key record (HASH), redis_keys.device_keys()
-- KEYS[2]  the device's unclaimed one-time prekeys (LIST, oldest first), redis_keys.device_one_time_prekeys()
-- KEYS[3]  the user's devices with keys (SET), redis_keys.user_key_devices()
-- KEYS[4]  the device's unclaimed one-time PQ prekeys (LIST, oldest first), redis_keys.device_one_time_pq_prekeys()
-- ARGV[1]  device id (member of KEYS[3])
-- ARGV[2]  the identity key the caller verified signatures against: the stored one, or a new one ("" = none)
-- ARGV[3]  the identity key stored when the caller read it ("" = none); the script refuses if it changed since,
--          so signatures are never checked against a key that is no longer current
-- ARGV[4]  registration id ("" keeps the stored one)
-- ARGV[5]  signed prekey id, ARGV[6] its serialized public key, ARGV[7] its signature ("" = not in this call)
-- ARGV[8]  last-resort PQ prekey id, ARGV[9] its serialized public key, ARGV[10] its signature ("" = not in this call)
-- ARGV[11] maximum unclaimed one-time prekeys per device
-- ARGV[12] now, Unix ms
-- ARGV[13] maximum unclaimed one-time PQ prekeys per device
-- ARGV[14] n, the number of one-time prekeys in this call
-- ARGV[15..14+n]  one-time prekeys, each a 4-byte big-endian id followed by the 33-byte serialized public key
-- ARGV[15+n..]    one-time PQ prekeys, each a 4-byte big-endian id, the serialized public key and the signature
--
-- Returns {0, identity_changed (0|1), one-time prekeys now, one-time PQ prekeys now} on success, or {code} with
--   -1  the stored identity key changed since the caller read it (caller retries)
--   -2  first publication without identity key, registration id and signed prekey
--   -3  a new identity key without a new signed prekey (the old one is signed by the old key)
--   -4  one-time prekeys would exceed the maximum
--   -5  one-time PQ prekeys would exceed the maximum
-- Everything is checked before anything is written, so a refused call changes nothing.
local stored_ik = redis.call('HGET', KEYS[1], 'ik') or ''
if stored_ik ~= ARGV[3] then
  return {-1}
end
local new_ik = ARGV[2]
local has_spk = ARGV[6] ~= ''
if stored_ik == '' and (new_ik == '' or ARGV[4] == '' or not has_spk) then
  return {-2}
end
local changed = stored_ik ~= '' and new_ik ~= '' and new_ik ~= stored_ik
if changed and not has_spk then
  return {-3}
end
local first_ec = 15
local first_pq = first_ec + tonumber(ARGV[14])
local existing, existing_pq = 0, 0
if not changed then
  existing = redis.call('LLEN', KEYS[2])
  existing_pq = redis.call('LLEN', KEYS[4])
end
if existing + (first_pq - first_ec) > tonumber(ARGV[11]) then
  return {-4}
end
if existing_pq + (#ARGV - first_pq + 1) > tonumber(ARGV[13]) then
  return {-5}
end

if changed then
  -- Prekeys signed by or paired with the old identity are useless now.
  redis.call('DEL', KEYS[2], KEYS[4])
  redis.call('HDEL', KEYS[1], 'pq_id', 'pq', 'pq_sig')
end
if new_ik ~= '' then
  redis.call('HSET', KEYS[1], 'ik', new_ik)
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'reg', ARGV[4])
end
if has_spk then
  redis.call('HSET', KEYS[1], 'spk_id', ARGV[5], 'spk', ARGV[6], 'spk_sig', ARGV[7])
end
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[1], 'pq_id', ARGV[8], 'pq', ARGV[9], 'pq_sig', ARGV[10])
end
redis.call('HSET', KEYS[1], 'updated_at_ms', ARGV[12])
for i = first_ec, first_pq - 1 do
  redis.call('RPUSH', KEYS[2], ARGV[i])
end
for i = first_pq, #ARGV do
  redis.call('RPUSH', KEYS[4], ARGV[i])
end
redis.call('SADD', KEYS[3], ARGV[1])
return {0, changed and 1 or 0, redis.call('LLEN', KEYS[2]), redis.call('LLEN', KEYS[4])}
