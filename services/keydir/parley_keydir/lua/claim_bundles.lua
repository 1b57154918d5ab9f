-- Claims prekey bundles for one or more devices of one user: each device's oldest one-time prekey is popped,
-- so it is handed out exactly once however many fetchers race (the script runs atomically).
--
-- KEYS[1]        the target user's recent requesters (ZSET), redis_keys.user_key_requesters()
-- KEYS[2k], KEYS[2k+1]  for each device k = 1..n: its key record (HASH) and its one-time prekeys (LIST)
-- ARGV[1]        the requesting user's address (recorded for identity-change notices)
-- ARGV[2]        now, Unix ms
-- ARGV[3]        maximum requesters remembered
-- ARGV[4]        requester memory, ms
--
-- Returns, for each device in order, 11 values: found (0|1), registration id, identity key, signed prekey id,
-- signed prekey, signature, PQ prekey id, PQ prekey, PQ signature, the claimed one-time prekey entry
-- (4-byte id + key) or "" when none was left, and the one-time prekeys left.
local result = {}
for k = 2, #KEYS, 2 do
  local fields = redis.call('HMGET', KEYS[k], 'reg', 'ik', 'spk_id', 'spk', 'spk_sig', 'pq_id', 'pq', 'pq_sig')
  if fields[2] then
    table.insert(result, 1)
    for i = 1, 8 do
      table.insert(result, fields[i] or '')
    end
    table.insert(result, redis.call('LPOP', KEYS[k + 1]) or '')
    table.insert(result, redis.call('LLEN', KEYS[k + 1]))
  else
    table.insert(result, 0)
    for _ = 1, 9 do
      table.insert(result, '')
    end
    table.insert(result, 0)
  end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[3]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return result
