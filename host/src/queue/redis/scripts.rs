//! The Lua scripts of the Redis queue backend: every state change that touches more than one
//! key is one script, so it is atomic even with several hosts (and inside one Cluster slot,
//! as every key of a queue shares its `{queue}` hash tag).
//!
//! The doorbell (Redis Cluster only): a cluster cannot block on several queues at once, so
//! a reader that found a queue empty sets its `idle` flag in the same script ([`READ`]), and
//! every script that adds to the stream rings: if the flag was set, it deletes it and
//! `SPUBLISH`es on the queue's `wake` shard channel. Flag and add are in one slot and one
//! script each, so no wake-up is lost; a busy queue (no reader waiting) publishes nothing.
//! On one node the scripts get no channel (`''`) and skip the doorbell entirely.

use std::sync::LazyLock;

use redis::Script;

/// `ring(flag, channel)`: the doorbell, for the scripts that add to a stream; a no-op
/// without a channel (one node).
macro_rules! ring_function {
    () => {
        r"
local function ring(flag, channel)
  if channel ~= '' and redis.call('DEL', flag) == 1 then redis.call('SPUBLISH', channel, '') end
end"
    };
}

pub(super) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        ring_function!(),
        r"
-- KEYS: stream, delayed, dedup, job hash, idle flag
-- ARGV: id, payload, attempt, max, backoff, enqueued_at, due_ms (0 = now), dedup_window_ms (0 = none), max_waiting, wake channel
if ARGV[8] ~= '0' then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {'dup', existing} end
end
local waiting = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if waiting >= tonumber(ARGV[9]) then return {'full', tostring(waiting)} end
if ARGV[8] ~= '0' then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[8]) end
local fields = {'id', ARGV[1], 'p', ARGV[2], 'a', ARGV[3], 'm', ARGV[4], 'b', ARGV[5], 't', ARGV[6]}
if ARGV[7] == '0' then
  redis.call('XADD', KEYS[1], '*', unpack(fields))
  ring(KEYS[5], ARGV[10])
else
  redis.call('HSET', KEYS[4], unpack(fields))
  redis.call('ZADD', KEYS[2], ARGV[7], ARGV[1])
end
return {'ok', ARGV[1]}
",
    ))
});

pub(super) static RETRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: stream, delayed, job hash, stats
-- ARGV: entry id, group, due_ms, id, payload, next attempt, max, backoff, enqueued_at
if redis.call('XACK', KEYS[1], ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], 'id', ARGV[4], 'p', ARGV[5], 'a', ARGV[6], 'm', ARGV[7], 'b', ARGV[8], 't', ARGV[9])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('HINCRBY', KEYS[4], 'retried', 1)
return 1
",
    )
});

pub(super) static BURY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: stream, dead, stats
-- ARGV: entry id, group, max dead, id, payload, attempt, max, backoff, enqueued_at, error, failed_at
if redis.call('XACK', KEYS[1], ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'id', ARGV[4], 'p', ARGV[5], 'a', ARGV[6],
  'm', ARGV[7], 'b', ARGV[8], 't', ARGV[9], 'error', ARGV[10], 'failed_at', ARGV[11])
redis.call('HINCRBY', KEYS[3], 'failed', 1)
return 1
",
    )
});

pub(super) static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        ring_function!(),
        r"
-- KEYS: delayed, stream, idle flag
-- ARGV: now_ms, batch, job hash prefix, wake channel
-- Returns the due time of the earliest job left (-1: none). Nothing due costs one ZRANGE.
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #head == 0 then return -1 end
if tonumber(head[2]) > tonumber(ARGV[1]) then return head[2] end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  local job = ARGV[3] .. id
  local fields = redis.call('HGETALL', job)
  if #fields > 0 then redis.call('XADD', KEYS[2], '*', unpack(fields)) end
  redis.call('DEL', job)
  redis.call('ZREM', KEYS[1], id)
end
if #due > 0 then ring(KEYS[3], ARGV[4]) end
if #due >= tonumber(ARGV[2]) then return ARGV[1] end
head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #head == 0 then return -1 end
return head[2]
",
    ))
});

pub(super) static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        ring_function!(),
        r"
-- KEYS: stream, dead, stats, idle flag
-- ARGV: group, consumer, min idle ms, count, error, max dead, failed_at, wake channel
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local n = 0
for _, entry in ipairs(claimed[2]) do
  local f = entry[2]
  if f then
    local h = {}
    for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
    local a = tonumber(h['a'])
    if a >= tonumber(h['m']) then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'id', h['id'], 'p', h['p'], 'a', h['a'],
        'm', h['m'], 'b', h['b'], 't', h['t'], 'error', ARGV[5], 'failed_at', ARGV[7])
      redis.call('HINCRBY', KEYS[3], 'failed', 1)
    else
      redis.call('XADD', KEYS[1], '*', 'id', h['id'], 'p', h['p'], 'a', tostring(a + 1), 'm', h['m'],
        'b', h['b'], 't', h['t'])
    end
  end
  redis.call('XACK', KEYS[1], ARGV[1], entry[1])
  redis.call('XDEL', KEYS[1], entry[1])
  n = n + 1
end
if n > 0 then ring(KEYS[4], ARGV[8]) end
return n
",
    ))
});

pub(super) static RETRY_DEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        ring_function!(),
        r"
-- KEYS: dead, stream, idle flag
-- ARGV: job id ('' = all), wake channel
local entries = redis.call('XRANGE', KEYS[1], '-', '+')
local n = 0
for _, entry in ipairs(entries) do
  local f = entry[2]
  local h = {}
  for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
  if ARGV[1] == '' or h['id'] == ARGV[1] then
    redis.call('XADD', KEYS[2], '*', 'id', h['id'], 'p', h['p'], 'a', '1', 'm', h['m'], 'b', h['b'], 't', h['t'])
    redis.call('XDEL', KEYS[1], entry[1])
    n = n + 1
  end
end
if n > 0 then ring(KEYS[3], ARGV[2]) end
return n
",
    ))
});

/// A cluster reader's non-blocking read of one queue; when it finds nothing new it sets the
/// queue's idle flag in the same step, so the next add rings the doorbell.
pub(super) static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: stream, idle flag
-- ARGV: group, consumer, count, flag ttl ms
local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if read then return read end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
return false
",
    )
});
