-- Drop an outbox row's in-flight marker when the row itself is gone (settled or trimmed).
-- KEYS[1] outstate hash, KEYS[2] outbox stream; ARGV[1] stream id. 1 when the marker was dropped.
if #redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1]) > 0 then
  return 0
end
return redis.call('HDEL', KEYS[1], ARGV[1])
