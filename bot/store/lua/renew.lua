-- Extend a held lease (and the conversation's claim on the ready set) while a turn runs.
-- KEYS[1] lease, KEYS[2] ready zset; ARGV[1] token, ARGV[2] ttl ms, ARGV[3] new ready score, ARGV[4] conv
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[4])
return 1
