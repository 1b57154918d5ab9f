-- Takes one event in, once: queues its webhook deliveries (coalescing wake-ups per device) and appends its
-- notices, unless the event was taken in before (consumers get events at least once). Atomic, so a crash leaves
-- either all of it or none of it.
--
-- Coalescing (deliveries with coalesce = 1), per device, within ARGV[3] ms: the first event of a quiet device is
-- queued at once (leading edge) and opens a window; the next events inside the window become one trailing
-- delivery due when the window ends (newer data replaces older; `coalesced` counts the merged events), and
-- scheduling it opens the next window, so a device under a steady stream of messages gets one wake-up per window.
-- The trailing delivery's hash is named from the wake state; it shares the {queue} slot with every key here.
--
-- KEYS[1]   the event's seen marker (STRING), redis_keys.notify_seen()
-- KEYS[2]   the due schedule (ZSET), redis_keys.NOTIFY_DUE
-- KEYS[3]   queued deliveries per provider (HASH), redis_keys.NOTIFY_DEPTH
-- KEYS[4]   the notices stream, redis_keys.NOTIFY_NOTICES
-- KEYS[3+2k], KEYS[4+2k]  for each delivery k = 1..n: its hash (redis_keys.notify_delivery()) and its device's
--           wake state (redis_keys.notify_wake(); any key of the slot when the delivery is not coalesced)
-- ARGV[1]   now, Unix ms
-- ARGV[2]   how long the seen marker lives, ms
-- ARGV[3]   coalescing window, ms
-- ARGV[4]   n, the number of deliveries
-- ARGV[5]   m, the number of notices
-- ARGV[6]   approximate length cap of the notices stream
-- ARGV[7]   prefix of delivery hash keys (redis_keys.notify_delivery(""))
-- then 6 values per delivery: id, provider, type, data (JSON), occurred_at_ms, coalesce (0|1)
-- then 4 values per notice: user ("" for every user), kind, subject, at_ms
--
-- Returns {0} when the event was taken in before; otherwise {1, outcome per delivery}: 1 queued now,
-- 2 queued as the trailing wake-up of a window, 3 merged into the pending trailing wake-up.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0}
end
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local m = tonumber(ARGV[5])
local prefix = ARGV[7]

local function queue(key, id, provider, kind, data, occurred, due)
  if redis.call('EXISTS', key) == 1 then
    return
  end
  redis.call('HSET', key, 'provider', provider, 'type', kind, 'data', data, 'occurred_at_ms', occurred,
    'attempts', 0, 'created_at_ms', now, 'coalesced', 0, 'last_error', '')
  redis.call('ZADD', KEYS[2], due, id)
  redis.call('HINCRBY', KEYS[3], provider, 1)
end

local result = {1}
for k = 1, n do
  local base = 7 + (k - 1) * 6
  local id, provider, kind, data = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
  local occurred, coalesce = ARGV[base + 5], ARGV[base + 6]
  local key, wake = KEYS[3 + 2 * k], KEYS[4 + 2 * k]
  local outcome = 1
  if coalesce == '1' then
    local state = redis.call('HMGET', wake, 'until', 'trailing', 'trailing_due')
    local until_ms = tonumber(state[1] or '0')
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
  else
    queue(key, id, provider, kind, data, occurred, now)
  end
  table.insert(result, outcome)
end

for j = 1, m do
  local base = 7 + n * 6 + (j - 1) * 4
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'user', ARGV[base + 1], 'kind', ARGV[base + 2],
    'subject', ARGV[base + 3], 'at_ms', ARGV[base + 4])
end
redis.call('SET', KEYS[1], 1, 'PX', ARGV[2])
return result
