-- Stores a report with its first audit entry and indexes it; a repeat of the same report changes at most one
-- thing: an unverified report becomes verified when the repeat verifies.
--
-- KEYS[1]  the report (HASH), redis_keys.report(); its id is derived from reporter, sender and message id
-- KEYS[2]  its audit trail (LIST), redis_keys.report_audit()
-- KEYS[3]  all reports (ZSET, scores 0), redis_keys.REPORT_INDEX
-- KEYS[4]  open reports (ZSET, scores 0), redis_keys.OPEN_REPORT_INDEX
-- ARGV[1]  reporter, ARGV[2] sender, ARGV[3] message id, ARGV[4] verified (1|0), ARGV[5] category,
-- ARGV[6]  created at (Unix ms), ARGV[7] plaintext, ARGV[8] the relay's timestamp (Unix ms),
-- ARGV[9]  outcome (OPEN, as a ReportOutcome number)
-- ARGV[10] index member: created at (13 digits) ':' report id, so that members sort by time
-- ARGV[11] the audit entry of this call (creation, or upgrade)
--
-- Returns 1 when the stored report is verified (now), else 0. A retried call finds the stored report and
-- writes nothing.
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'verified') == '0' and ARGV[4] == '1' then
    redis.call('HSET', KEYS[1], 'verified', '1', 'plaintext', ARGV[7], 'sent_at_ms', ARGV[8])
    redis.call('RPUSH', KEYS[2], ARGV[11])
    return 1
  end
  return tonumber(redis.call('HGET', KEYS[1], 'verified'))
end
redis.call('HSET', KEYS[1],
  'reporter', ARGV[1], 'sender', ARGV[2], 'message_id', ARGV[3], 'verified', ARGV[4], 'category', ARGV[5],
  'created_at_ms', ARGV[6], 'plaintext', ARGV[7], 'sent_at_ms', ARGV[8], 'outcome', ARGV[9], 'index', ARGV[10])
redis.call('RPUSH', KEYS[2], ARGV[11])
redis.call('ZADD', KEYS[3], 0, ARGV[10])
redis.call('ZADD', KEYS[4], 0, ARGV[10])
return tonumber(ARGV[4])
