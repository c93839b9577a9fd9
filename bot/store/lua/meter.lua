-- A conversation's model cost meters (bot/limits.py); counter and expiry set together.
-- KEYS[1] the meter. ARGV[1] 'call': count one call; the window (ARGV[2] ms) starts at the first.
--                    ARGV[1] 'tokens': add ARGV[2] tokens to the day's total, kept ARGV[3] seconds.
-- Returns the meter's value after the change.
if ARGV[1] == 'call' then
  local n = redis.call('INCR', KEYS[1])
  if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  return n
end
local total = redis.call('INCRBY', KEYS[1], ARGV[2])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return total
