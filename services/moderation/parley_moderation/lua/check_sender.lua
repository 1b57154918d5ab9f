-- The sender's part of send decisions: restriction, then the sender's token buckets, all or nothing per send.
--
-- KEYS[1]  the sender's restriction (STRING with TTL), redis_keys.sender_restriction()
-- KEYS[2]  the sender's contacts (ZSET: users who sent to the sender), redis_keys.contacts()
-- KEYS[3]  the sender's send bucket (HASH `tokens`, `ts`), redis_keys.rate_limit(sender, "send")
-- KEYS[4]  the sender's first-contact bucket (HASH `tokens`, `ts`), redis_keys.rate_limit(sender, "first_contact")
-- ARGV[1]  the recipient user's address
-- ARGV[2]  send bucket capacity (tokens, float)
-- ARGV[3]  send bucket refill rate (tokens per second, float > 0)
-- ARGV[4]  first-contact bucket capacity
-- ARGV[5]  first-contact bucket refill rate
-- ARGV[6]  1 when the first-contact rule applies (the recipient is another user), else 0
-- ARGV[7]  how many sends to the same recipient this call decides, in order (>= 1): a batch's run of sends from
--          one sender to one recipient is one call, each send decided exactly as if checked alone after the one
--          before (at one server time)
--
-- Returns one reply per send, in order: {outcome, retry_after_ms, first_contact (1|0)}; outcome 0 = allowed (a
-- token taken from the send bucket, and from the first-contact bucket when first_contact), 1 = the sender is
-- restricted, 2 = the send bucket is empty, 3 = the first-contact bucket is empty. A refusal takes nothing, so a
-- refused send costs no tokens. First contact: the recipient never sent to the sender (the sender's contacts lack
-- the recipient); the sends of one call cannot change that, as only the recipient's sends add to these contacts.
-- Buckets follow parley_runtime's token_bucket.lua (server time, expiry once full again); they are inlined here
-- so that both are checked before either is taken. Each bucket is read once and written once, after the last
-- send: every send sees the level the sends before it left (kept here, rounded as a write and re-read would round
-- it). When another part of the decision refuses a send, refund_sender.lua gives back what it took.
local count = tonumber(ARGV[7])
local replies = {}
if redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 1, count do
    replies[i] = {1, 0, 0}
  end
  return replies
end

local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000

local function level(key, capacity, rate)
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  if tokens == nil then
    return capacity
  end
  return math.min(capacity, tokens + math.max(0, now - ts) * rate)
end

local function store(key, tokens, capacity, rate)
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((capacity - tokens) / rate * 1000) + 1000)
end

local send_capacity, send_rate = tonumber(ARGV[2]), tonumber(ARGV[3])
local first_capacity, first_rate = tonumber(ARGV[4]), tonumber(ARGV[5])
local send_tokens = level(KEYS[3], send_capacity, send_rate)
local first_contact = 0
local first_tokens
if ARGV[6] == '1' and not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  first_contact = 1
  first_tokens = level(KEYS[4], first_capacity, first_rate)
end

local taken = 0
for i = 1, count do
  if send_tokens < 1 then
    replies[i] = {2, math.ceil((1 - send_tokens) / send_rate * 1000), 0}
  elseif first_contact == 1 and first_tokens < 1 then
    replies[i] = {3, math.ceil((1 - first_tokens) / first_rate * 1000), 1}
  else
    send_tokens = tonumber(tostring(send_tokens - 1))
    if first_contact == 1 then
      first_tokens = tonumber(tostring(first_tokens - 1))
    end
    taken = taken + 1
    replies[i] = {0, 0, first_contact}
  end
end
if taken > 0 then
  if first_contact == 1 then
    store(KEYS[4], first_tokens, first_capacity, first_rate)
  end
  store(KEYS[3], send_tokens, send_capacity, send_rate)
end
return replies
