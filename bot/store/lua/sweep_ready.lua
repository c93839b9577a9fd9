-- Make a conversation with inbound messages claimable again when it fell out of the ready set.
-- KEYS[1] inbox list, KEYS[2] ready zset (one partition: one slot); ARGV[1] conv id, ARGV[2] now ms
-- 1 when it was re-added; 0 when the inbox is empty or the conversation is already in the set.
if redis.call('LLEN', KEYS[1]) == 0 or redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
