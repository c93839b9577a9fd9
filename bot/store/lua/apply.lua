-- Apply the outcome of a turn (or of an agent action) to one conversation, atomically.
-- KEYS: 1 conv hash, 2 inbox, 3 history, 4 lease, 5 ready zset, 6 outbox stream, 7 track stream,
--       8 jobs stream, 9 audit list, 10 idx:bot, 11 idx:waiting, 12 idx:with_agent
-- ARGV: 1 conv id, 2 lease token ('' = no lease needed), 3 expected epoch (-1 = any),
--       4 expected status ('' = any), 5 inbox length seen (-1 = do not check for newer messages),
--       6 now (seconds, float), 7 mutation json
-- Returns {code, epoch, inbox_remaining}: 1 applied; -1 lease lost; -2 fenced (owner changed);
-- -3 superseded (newer inbound messages arrived: recompute the turn with them).
local conv = KEYS[1]
if ARGV[2] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[2] then
  return {-1, 0, 0}
end
local state = redis.call('HMGET', conv, 'epoch', 'status')
local epoch = tonumber(state[1] or '0') or 0
local status = state[2] or 'bot'
if (tonumber(ARGV[3]) >= 0 and epoch ~= tonumber(ARGV[3])) or (ARGV[4] ~= '' and status ~= ARGV[4]) then
  return {-2, epoch, redis.call('LLEN', KEYS[2])}
end
if tonumber(ARGV[5]) >= 0 and redis.call('LLEN', KEYS[2]) > tonumber(ARGV[5]) then
  return {-3, epoch, redis.call('LLEN', KEYS[2])}
end

local m = cjson.decode(ARGV[7])
local now = ARGV[6]
if m.incr_epoch then
  epoch = redis.call('HINCRBY', conv, 'epoch', 1)
end
if m.set then
  local flat = {}
  for k, v in pairs(m.set) do
    flat[#flat + 1] = k
    flat[#flat + 1] = tostring(v)
  end
  if #flat > 0 then redis.call('HSET', conv, unpack(flat)) end
end
if m.del and #m.del > 0 then redis.call('HDEL', conv, unpack(m.del)) end
if m.status and m.status ~= cjson.null then
  local idx = {bot = KEYS[10], waiting = KEYS[11], with_agent = KEYS[12]}
  redis.call('HSET', conv, 'status', m.status)
  for name, key in pairs(idx) do
    if name ~= m.status then redis.call('ZREM', key, ARGV[1]) end
  end
  redis.call('ZADD', idx[m.status], now, ARGV[1])
elseif redis.call('HEXISTS', conv, 'status') == 0 then
  redis.call('HSET', conv, 'status', 'bot')
  redis.call('ZADD', KEYS[10], now, ARGV[1])
end
if m.touch then
  -- keep the status index ordered by last activity, except `waiting`, which is ordered by wait time
  local cur = redis.call('HGET', conv, 'status')
  if cur ~= 'waiting' then
    redis.call('ZADD', ({bot = KEYS[10], with_agent = KEYS[12]})[cur], now, ARGV[1])
  end
end
if m.hist and #m.hist > 0 then
  redis.call('RPUSH', KEYS[3], unpack(m.hist))
  redis.call('LTRIM', KEYS[3], -tonumber(m.hist_keep or 60), -1)
end
if m.audit and #m.audit > 0 then
  redis.call('RPUSH', KEYS[9], unpack(m.audit))
  redis.call('LTRIM', KEYS[9], -200, -1)
end
for _, row in ipairs(m.out or {}) do redis.call('XADD', KEYS[6], '*', 'r', row) end
for _, obj in ipairs(m.track or {}) do redis.call('XADD', KEYS[7], '*', 'r', obj) end
for _, job in ipairs(m.jobs or {}) do redis.call('XADD', KEYS[8], '*', 'r', job) end
for _, note in ipairs(m.publish or {}) do redis.call('PUBLISH', 'agent-events', note) end
if m.consume and m.consume > 0 then
  redis.call('LTRIM', KEYS[2], m.consume, -1)
end
local remaining = redis.call('LLEN', KEYS[2])
if ARGV[2] ~= '' then
  redis.call('DEL', KEYS[4])
  if remaining > 0 then
    redis.call('ZADD', KEYS[5], 0, ARGV[1])
  else
    redis.call('ZREM', KEYS[5], ARGV[1])
  end
end
return {1, epoch, remaining}
