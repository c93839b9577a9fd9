-- Everything a turn reads, in one command (cheaper for the client than a pipeline of four).
-- KEYS[1] conv hash, KEYS[2] inbox, KEYS[3] history; ARGV[1] most inbox entries to return.
-- Returns {conv hash as a flat list, inbox entries, inbox length, history items}.
return {
  redis.call('HGETALL', KEYS[1]),
  redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1),
  redis.call('LLEN', KEYS[2]),
  redis.call('LRANGE', KEYS[3], 0, -1),
}
