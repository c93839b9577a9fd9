-- Give a lease back if still held: KEYS[1] lease; ARGV[1] owner; ARGV[2] optional ready zset member
-- to make ready at once (KEYS[2]), so another worker takes the work without waiting for expiry.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if KEYS[2] then
  redis.call('ZADD', KEYS[2], 0, ARGV[2])
end
return 1
