-- Appends one chunk to a resumable upload, and only where the upload stands, so that two calls resuming the same
-- upload at once cannot interleave their bytes.
--
-- KEYS[1]  the upload's metadata (HASH `size`, `sha256`, `provider`, `user`, `complete`), redis_keys.media()
-- KEYS[2]  the upload's bytes so far (STRING), redis_keys.media_data()
-- ARGV[1]  the offset the caller believes the upload stands at
-- ARGV[2]  the chunk
--
-- Returns {status, received}: 1 appended (received = bytes stored now); 0 the offset is not where the upload
-- stands (received = where it does); -1 no such upload, or it is complete already (received = its size, 0 if
-- none); -2 the chunk would pass the announced size (nothing appended). The bytes expire with the metadata.
local meta = redis.call('HMGET', KEYS[1], 'size', 'complete')
if not meta[1] then
  return {-1, 0}
end
local size = tonumber(meta[1])
if meta[2] ~= '0' then
  return {-1, size}
end
local received = redis.call('STRLEN', KEYS[2])
if received ~= tonumber(ARGV[1]) then
  return {0, received}
end
if received + string.len(ARGV[2]) > size then
  return {-2, received}
end
received = redis.call('APPEND', KEYS[2], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {1, received}
