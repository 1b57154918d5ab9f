-- Sets a report's outcome and appends the audit entry saying who decided what.
--
-- KEYS[1]  the report (HASH), redis_keys.report()
-- KEYS[2]  its audit trail (LIST), redis_keys.report_audit()
-- KEYS[3]  open reports (ZSET), redis_keys.OPEN_REPORT_INDEX
-- ARGV[1]  the outcome (a ReportOutcome number, never OPEN)
-- ARGV[2]  the audit entry
--
-- Returns 1, or 0 when there is no such report (nothing written). Every call appends its entry: the trail
-- records each decision, a repeated one included.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'outcome', ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], redis.call('HGET', KEYS[1], 'index'))
return 1
