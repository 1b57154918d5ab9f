-- Takes a batch of events in, each once: queues each event's webhook deliveries (coalescing wake-ups per device)
-- and appends its notices, unless that event was taken in before (consumers get events at least once). Atomic,
-- so a crash leaves all of the batch or none of it.
--
-- Coalescing (deliveries with coalesce = 1), per device, within ARGV[3] ms: the first event of a quiet device is
-- queued at once (leading edge) and opens a window; the next events inside the window become one trailing
-- delivery due when the window ends (newer data replaces older; `coalesced` counts the merged events), and
-- scheduling it opens the next window, so a device under a steady stream of messages gets one wake-up per window.
-- The trailing delivery's hash is named from the wake state; it shares the {queue} slot with every key here.
--
-- KEYS[1]   the due schedule (ZSET), redis_keys.NOTIFY_DUE
-- KEYS[2]   queued deliveries per provider (HASH), redis_keys.NOTIFY_DEPTH
-- KEYS[3]   the notices stream, redis_keys.NOTIFY_NOTICES
-- then, per event: its seen marker (STRING, redis_keys.notify_seen()), and per delivery of the event its hash
--           (redis_keys.notify_delivery()) and its device's wake state (redis_keys.notify_wake(); any key of the
--           slot when the delivery is not coalesced)
-- ARGV[1]   now, Unix ms
-- ARGV[2]   how long a seen marker lives, ms
-- ARGV[3]   coalescing window, ms
-- ARGV[4]   approximate length cap of the notices stream
-- ARGV[5]   prefix of delivery hash keys (redis_keys.notify_delivery(""))
-- ARGV[6]   the number of events
-- then, per event: n (its deliveries), m (its notices), 6 values per delivery (id, provider, type, data (JSON),
--           occurred_at_ms, coalesce 0|1) and 4 values per notice (user, "" for every user; kind; subject; at_ms)
--
-- Returns, per event in order: 0 when it was taken in before; otherwise 1 followed by one outcome per delivery:
-- 1 queued now, 2 queued as the trailing wake-up of a window, 3 merged into the pending trailing wake-up.
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[3])
local prefix = ARGV[5]

local function queue(key, id, provider, kind, data, occurred, due)
  if redis.call('EXISTS', key) == 1 then
    return
  end
  redis.call('HSET', key, 'provider', provider, 'type', kind, 'data', data, 'occurred_at_ms', occurred,
    'attempts', 0, 'created_at_ms', now, 'coalesced', 0, 'last_error', '')
  redis.call('ZADD', KEYS[1], due, id)
  redis.call('HINCRBY', KEYS[2], provider, 1)
end

local function coalesced(key, wake, id, provider, kind, data, occurred)
  local state = redis.call('HMGET', wake, 'until', 'trailing', 'trailing_due')
  local until_ms = tonumber(state[1] or '0')
  local outcome = 1
  if now >= until_ms then
    queue(key, id, provider, kind, data, occurred, now)
    until_ms = now + window
    redis.call('HSET', wake, 'until', until_ms, 'trailing', '', 'trailing_due', 0)
  else
    local trailing, trailing_due = state[2] or '', tonumber(state[3] or '0')
    local trailing_key = prefix .. trailing
    if trailing ~= '' and now < trailing_due and redis.call('HGET', trailing_key, 'attempts') == '0' then
      if tonumber(occurred) >= tonumber(redis.call('HGET', trailing_key, 'occurred_at_ms')) then
        redis.call('HSET', trailing_key, 'data', data, 'occurred_at_ms', occurred)
      end
      redis.call('HINCRBY', trailing_key, 'coalesced', 1)
      outcome = 3
    else
      queue(key, id, provider, kind, data, occurred, until_ms)
      redis.call('HSET', wake, 'until', until_ms + window, 'trailing', id, 'trailing_due', until_ms)
      until_ms = until_ms + window
      outcome = 2
    end
  end
  -- Relative, so the state's lifetime does not depend on Redis's clock agreeing with ours.
  redis.call('PEXPIRE', wake, until_ms + window - now)
  return outcome
end

local result = {}
local k = 4       -- next KEYS index
local a = 7       -- next ARGV index
for _ = 1, tonumber(ARGV[6]) do
  local seen = KEYS[k]
  k = k + 1
  local n, m = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  if redis.call('EXISTS', seen) == 1 then
    table.insert(result, 0)
    k = k + 2 * n
    a = a + 6 * n + 4 * m
  else
    table.insert(result, 1)
    for _ = 1, n do
      local id, provider, kind, data = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
      local occurred, coalesce = ARGV[a + 4], ARGV[a + 5]
      if coalesce == '1' then
        table.insert(result, coalesced(KEYS[k], KEYS[k + 1], id, provider, kind, data, occurred))
      else
        queue(KEYS[k], id, provider, kind, data, occurred, now)
        table.insert(result, 1)
      end
      k = k + 2
      a = a + 6
    end
    for _ = 1, m do
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'user', ARGV[a], 'kind', ARGV[a + 1],
        'subject', ARGV[a + 2], 'at_ms', ARGV[a + 3])
      a = a + 4
    end
    redis.call('SET', seen, 1, 'PX', ARGV[2])
  end
end
return result
