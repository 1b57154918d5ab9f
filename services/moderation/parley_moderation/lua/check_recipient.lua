-- The recipient's part of send decisions: is the sender blocked; if not, remember the sender as a contact.
--
-- KEYS[1]  the recipient's blocks (ZSET of user addresses), redis_keys.blocks()
-- KEYS[2]  the recipient's contacts (ZSET: users who sent to the recipient), redis_keys.contacts()
-- ARGV[1]  the sender user's address
-- ARGV[2]  now, Unix ms
-- ARGV[3]  most contacts remembered per user (the oldest are forgotten first)
-- ARGV[4]  contact memory, ms (refreshed by every send to the recipient)
-- ARGV[5]  how many sends from the same sender this call decides (>= 1), each as if checked alone after the one
--          before
--
-- Returns one reply per send, in order: {1} when the recipient blocked the sender (nothing is written), else {0,
-- the sender's score before ('' when it was no contact), then each contact the bound forgot with its score}: what
-- restore_contacts.lua needs to undo the record when a batch's speculative tail is rolled back. Only the first
-- send of a call can find the sender new or make the bound forget anyone; the later ones find the score the first
-- wrote. Recording the contact lets the recipient's replies to the sender skip the first-contact limit. It runs in
-- the same round trip as the sender's checks, so it also records sends that a rate limit then refuses: harmless,
-- as it only ever relaxes the limit for the recipient answering someone who tried to reach them. Idempotent: a
-- repeat only moves the score.
local count = tonumber(ARGV[5])
local replies = {}
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  for i = 1, count do
    replies[i] = {1}
  end
  return replies
end
local function record()
  local reply = {0, redis.call('ZSCORE', KEYS[2], ARGV[1]) or ''}
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
  if excess > 0 then
    for _, value in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess - 1, 'WITHSCORES')) do
      reply[#reply + 1] = value
    end
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  return reply
end

replies[1] = record()
local recorded = redis.call('ZSCORE', KEYS[2], ARGV[1])
for i = 2, count do
  if recorded then
    -- Recording the same sender at the same time again changes nothing.
    replies[i] = {0, recorded}
  else
    -- A bound so small that the sender itself was forgotten: each send records again, as alone.
    replies[i] = record()
  end
end
return replies
