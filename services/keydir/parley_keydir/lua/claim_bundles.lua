-- Claims prekey bundles for one or more devices of one user: each device's oldest one-time prekey and oldest
-- one-time PQ prekey are popped together, so each is handed out exactly once however many fetchers race (the script
-- runs atomically). A device without a one-time PQ prekey left gives its last-resort PQ prekey instead, which
-- stays.
--
-- The drain guard: each device hands out one-time prekeys (EC and PQ alike) to at most ARGV[5] bundles per window
-- of ARGV[6] ms, whoever asks (a fixed window counted per device, so requesters minted by the thousand cannot empty
-- it). Past the limit its bundles still go out, without a one-time prekey and with the last-resort PQ prekey
-- (sessions form with the signed and last-resort PQ prekeys).
--
-- KEYS[1]        the target user's recent requesters (ZSET), redis_keys.user_key_requesters()
-- KEYS[4k-2..4k+1]  for each device k = 1..n: its key record (HASH), its one-time prekeys (LIST), its one-time
--                PQ prekeys (LIST), redis_keys.device_one_time_pq_prekeys(), and its claims in the current window
--                (STRING counter), redis_keys.device_claims()
-- ARGV[1]        the requesting user's address (recorded for identity-change notices)
-- ARGV[2]        now, Unix ms
-- ARGV[3]        maximum requesters remembered
-- ARGV[4]        requester memory, ms
-- ARGV[5]        bundles with one-time prekeys a device may hand out per window
-- ARGV[6]        the window, ms
--
-- Returns, for each device in order, 14 values: found (0|1), registration id, identity key, signed prekey id,
-- signed prekey, signature, the claimed one-time PQ prekey entry (4-byte id + key + signature) or "", the
-- last-resort PQ prekey id, key and signature (all "" when a one-time PQ prekey was claimed or none is
-- published), the claimed one-time prekey entry (4-byte id + key) or "" when none was left or the guard withheld
-- it, the one-time prekeys left, the one-time PQ prekeys left, and the device's claims in the window including
-- this one.
local limit = tonumber(ARGV[5])
local result = {}
for k = 2, #KEYS, 4 do
  local fields = redis.call('HMGET', KEYS[k], 'reg', 'ik', 'spk_id', 'spk', 'spk_sig')
  if fields[2] then
    table.insert(result, 1)
    for i = 1, 5 do
      table.insert(result, fields[i] or '')
    end
    local claims = redis.call('INCR', KEYS[k + 3])
    if claims == 1 then
      redis.call('PEXPIRE', KEYS[k + 3], ARGV[6])
    end
    local one_time, one_time_pq = '', ''
    if claims <= limit then
      one_time = redis.call('LPOP', KEYS[k + 1]) or ''
      one_time_pq = redis.call('LPOP', KEYS[k + 2]) or ''
    end
    table.insert(result, one_time_pq)
    if one_time_pq == '' then
      -- Only a bundle without a one-time PQ prekey carries (and pays the transfer of) the last-resort one.
      local last_resort = redis.call('HMGET', KEYS[k], 'pq_id', 'pq', 'pq_sig')
      for i = 1, 3 do
        table.insert(result, last_resort[i] or '')
      end
    else
      for _ = 1, 3 do
        table.insert(result, '')
      end
    end
    table.insert(result, one_time)
    table.insert(result, redis.call('LLEN', KEYS[k + 1]))
    table.insert(result, redis.call('LLEN', KEYS[k + 2]))
    table.insert(result, claims)
  else
    table.insert(result, 0)
    for _ = 1, 10 do
      table.insert(result, '')
    end
    for _ = 1, 3 do
      table.insert(result, 0)
    end
  end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return result
