-- Durably accept one inbound message, once.
-- KEYS[1] dedupe key, KEYS[2] inbox list, KEYS[3] ready zset (all in one partition slot)
-- ARGV[1] dedupe ttl seconds, ARGV[2] entry json, ARGV[3] conversation id, ARGV[4] now ms
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], 'NX', ARGV[4], ARGV[3])
return 1
