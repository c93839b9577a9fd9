-- Move dead letters back to the stream they came from, atomically, each at most once.
-- KEYS: 1 dead stream, 2 outbox stream, 3 jobs stream, 4 track stream (one partition: one slot)
-- ARGV: dead-letter stream ids
-- Returns, per id: the new stream id in its original stream, or '' when the dead letter is gone
-- (already replayed or dropped) or of a kind this script does not know (left in place).
local target = {send = KEYS[2], job = KEYS[3], track = KEYS[4]}
local out = {}
for i, id in ipairs(ARGV) do
  out[i] = ''
  local rows = redis.call('XRANGE', KEYS[1], id, id)
  if #rows == 1 then
    local fields = {}
    local flat = rows[1][2]
    for j = 1, #flat, 2 do fields[flat[j]] = flat[j + 1] end
    local stream = target[fields['kind'] or '']
    if stream and fields['payload'] then
      out[i] = redis.call('XADD', stream, '*', 'r', fields['payload'])
      redis.call('XDEL', KEYS[1], id)
    end
  end
end
return out
