-- Durably accept one inbound message, once.
-- KEYS[1] seen zset (this conversation's recent message digests, score = when each expires, ms),
-- KEYS[2] inbox list, KEYS[3] ready zset (all in one partition slot)
-- ARGV[1] dedupe ttl seconds, ARGV[2] entry json, ARGV[3] conversation id, ARGV[4] now ms, ARGV[5] digest
local now = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[5]) then
  return 0
end
local ttl_ms = tonumber(ARGV[1]) * 1000
redis.call('ZADD', KEYS[1], now + ttl_ms, ARGV[5])
-- the set lives as long as its longest-lived digest
if redis.call('PTTL', KEYS[1]) < ttl_ms then
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], 'NX', ARGV[4], ARGV[3])
return 1
