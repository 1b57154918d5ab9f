-- Claims prekey bundles for one or more devices of one user: each device's oldest one-time prekey is popped,
-- so it is handed out exactly once however many fetchers race (the script runs atomically).
--
-- The drain guard: each device hands out at most ARGV[5] one-time prekeys per window of ARGV[6] ms, whoever asks
-- (a fixed window counted per device, so requesters minted by the thousand cannot empty it). Past the limit its
-- bundles still go out, without a one-time prekey (sessions form with the signed and last-resort PQ prekeys).
--
-- KEYS[1]        the target user's recent requesters (ZSET), redis_keys.user_key_requesters()
-- KEYS[3k-1], KEYS[3k], KEYS[3k+1]  for each device k = 1..n: its key record (HASH), its one-time prekeys (LIST)
--                and its claims in the current window (STRING counter), redis_keys.device_claims()
-- ARGV[1]        the requesting user's address (recorded for identity-change notices)
-- ARGV[2]        now, Unix ms
-- ARGV[3]        maximum requesters remembered
-- ARGV[4]        requester memory, ms
-- ARGV[5]        one-time prekeys a device may hand out per window
-- ARGV[6]        the window, ms
--
-- Returns, for each device in order, 12 values: found (0|1), registration id, identity key, signed prekey id,
-- signed prekey, signature, PQ prekey id, PQ prekey, PQ signature, the claimed one-time prekey entry
-- (4-byte id + key) or "" when none was left or the guard withheld it, the one-time prekeys left, and the
-- device's claims in the window including this one.
local limit = tonumber(ARGV[5])
local result = {}
for k = 2, #KEYS, 3 do
  local fields = redis.call('HMGET', KEYS[k], 'reg', 'ik', 'spk_id', 'spk', 'spk_sig', 'pq_id', 'pq', 'pq_sig')
  if fields[2] then
    table.insert(result, 1)
    for i = 1, 8 do
      table.insert(result, fields[i] or '')
    end
    local claims = redis.call('INCR', KEYS[k + 2])
    if claims == 1 then
      redis.call('PEXPIRE', KEYS[k + 2], ARGV[6])
    end
    if claims <= limit then
      table.insert(result, redis.call('LPOP', KEYS[k + 1]) or '')
    else
      table.insert(result, '')
    end
    table.insert(result, redis.call('LLEN', KEYS[k + 1]))
    table.insert(result, claims)
  else
    table.insert(result, 0)
    for _ = 1, 9 do
      table.insert(result, '')
    end
    table.insert(result, 0)
    table.insert(result, 0)
  end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return result
