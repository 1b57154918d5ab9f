-- Undoes one contact record of check_recipient.lua: the undo of a speculative check in a batch (see store.py,
-- check_send_many).
--
-- KEYS[1]  the recipient's contacts (ZSET: users who sent to the recipient), redis_keys.contacts()
-- ARGV[1]  the recorded sender user's address
-- ARGV[2]  its score before the record ('' when it was no contact)
-- ARGV[3]  the score the record gave it (the batch's time, Unix ms)
-- ARGV[4..] the contacts the record forgot (the bound), each followed by its score
--
-- Returns 0. The record's steps in reverse: the forgotten contacts come back (unless recorded again since), then
-- the sender's score is put back or the sender removed, unless another call recorded it since (its score is no
-- longer the record's). The key's expiry is left as the record set it: every rolled-back check is run again
-- (its block outcome cannot change within a batch), and that run records the contact and expiry anew.
for index = 4, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'NX', ARGV[index + 1], ARGV[index])
end
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '-1') ~= tonumber(ARGV[3]) then
  return 0
end
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
return 0
