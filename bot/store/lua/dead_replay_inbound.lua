-- Give a set-aside burst (dead letter kind "inbound") back to its conversation, atomically, once.
-- KEYS: 1 dead stream, 2 the conversation's inbox, 3 its partition's ready zset (one slot)
-- ARGV: 1 dead-letter stream id, 2 conversation id, 3 now ms, 4.. the inbox entries (JSON)
-- Returns 1 when re-queued, 0 when the dead letter is gone (already replayed or dropped).
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return 0
end
for i = 4, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
end
redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
