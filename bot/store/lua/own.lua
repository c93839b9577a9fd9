-- Take or keep a named lease: KEYS[1] lease; ARGV[1] owner, ARGV[2] ttl ms. 1 when held by ARGV[1].
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
