-- Claim up to ARGV[3] ready conversations in all (a worker's free turn slots) and take their leases.
-- KEYS[i] ready zset of partition i. The conv/lease keys built below reuse that key's hash tag
-- (e.g. "{p3}"), so on Redis Cluster they live in the slot of a declared key.
-- ARGV[1] now ms, ARGV[2] visibility ms (= lease ttl), ARGV[3] max in all, ARGV[4] worker id,
-- ARGV[5] most inbox entries a turn reads.
-- Returns, per claimed conversation, {conv, token, conv hash (flat), inbox burst, inbox length,
-- history}: what Store.load would read, so a turn starts without a round trip of its own.
-- A claimed conversation's ready score moves ARGV[2] into the future: if this worker dies,
-- the conversation becomes ready again once its lease has expired.
local now = tonumber(ARGV[1])
local vis = tonumber(ARGV[2])
local room = tonumber(ARGV[3])
local out = {}
for _, ready in ipairs(KEYS) do
  if room <= 0 then break end
  local tag = string.match(ready, '{[^}]*}')
  local members = redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'LIMIT', 0, room)
  for _, conv in ipairs(members) do
    redis.call('ZADD', ready, now + vis, conv)
    local seq = redis.call('HINCRBY', 'conv:' .. tag .. ':' .. conv, 'lease_seq', 1)
    local token = ARGV[4] .. ':' .. seq
    if redis.call('SET', 'lease:' .. tag .. ':' .. conv, token, 'NX', 'PX', vis) then
      local inbox = 'inbox:' .. tag .. ':' .. conv
      out[#out + 1] = {
        conv,
        token,
        redis.call('HGETALL', 'conv:' .. tag .. ':' .. conv),
        redis.call('LRANGE', inbox, 0, tonumber(ARGV[5]) - 1),
        redis.call('LLEN', inbox),
        redis.call('LRANGE', 'hist:' .. tag .. ':' .. conv, 0, -1),
      }
      room = room - 1
    end
  end
end
return out
