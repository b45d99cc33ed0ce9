//! The Lua scripts of the Redis queue backend: every state change that touches more than one
//! key is one script, so it is atomic even with several hosts (and inside one Cluster slot,
//! as every key of a queue shares its `{queue}` hash tag).
//!
//! The doorbell (Redis Cluster only): a cluster cannot block on several queues at once, so
//! a reader that found a queue empty sets its `idle` flag in the same script ([`READ`]), and
//! every script that adds to the stream rings: if the flag was set, it deletes it and
//! `SPUBLISH`es on the queue's `wake` shard channel. Flag and add are in one slot and one
//! script each, so no wake-up is lost; a busy queue (no reader waiting) publishes nothing.
//! On one node the scripts get no channel (`''`) and skip the doorbell entirely, except for a
//! queue with priorities (below): there each reader that found it empty names its own `bell`
//! stream in the queue's `sleepers` set, and the next add rings every one of them.
//!
//! Priorities (`priorities = true`): such a queue's ready jobs wait in a sorted set
//! (`prioritized`, by priority then arrival; [`admit`](admit_function)) with their fields in
//! a job hash, and its stream holds only jobs being delivered: [`READ_PRIORITIZED`] releases
//! as many as the reader has slots for, highest first, into the stream and reads exactly
//! those, so the order is strict across every host.

use std::sync::LazyLock;

use redis::Script;

/// `ring(flag, channel, sleepers)`: the doorbell, for the scripts that add ready jobs: a
/// message on `channel` (a cluster), else an entry in the `bell` stream of every reader in
/// the `sleepers` set (one node, a queue with priorities: see `READ_PRIORITIZED`); a no-op
/// with neither. A bell outlives its reader by two minutes at most.
macro_rules! ring_function {
    () => {
        r"
local function ring(flag, channel, sleepers)
  if channel ~= '' then
    if redis.call('DEL', flag) == 1 then redis.call('SPUBLISH', channel, '') end
  elseif sleepers and sleepers ~= '' then
    local bells = redis.call('SMEMBERS', sleepers)
    if #bells > 0 then
      for _, bell in ipairs(bells) do
        redis.call('XADD', bell, 'MAXLEN', '8', '*', 'b', '')
        redis.call('PEXPIRE', bell, 120000)
      end
      redis.call('DEL', sleepers)
    end
  end
end"
    };
}

/// `admit(zset, seq, hash, id, fields, priority)`: a ready job of a queue with priorities
/// waits in the sorted set `zset`, by priority (0 to 9, higher first) then arrival (`seq`
/// counts), with its fields in its job hash `hash` (written when `fields` is given).
macro_rules! admit_function {
    () => {
        r"
local function admit(zset, seq, hash, id, fields, priority)
  if fields then redis.call('HSET', hash, unpack(fields)) end
  local score = (9 - (tonumber(priority) or 0)) * 1e13 + redis.call('INCR', seq)
  redis.call('ZADD', zset, string.format('%.0f', score), id)
end"
    };
}

/// `tell(watched, id, events)`: publishes `queue id` on the events channel when a host
/// watches job `id` (its entry in the `watched` hash has not expired). `events` is
/// `{channel, publish command, queue, now ms}`; `final` drops the watch entry too.
macro_rules! tell_function {
    () => {
        r"
local function tell(watched, id, events, final)
  local until_ms = redis.call('HGET', watched, id)
  if not until_ms then return end
  if final or tonumber(until_ms) < tonumber(events[4]) then redis.call('HDEL', watched, id) end
  if tonumber(until_ms) >= tonumber(events[4]) then
    redis.call(events[2], events[1], events[3] .. ' ' .. id)
  end
end"
    };
}

pub(super) use tell_function;

/// `trim_dead(dead, deadids, count, oldest_ms)`: drops dead letters beyond `count`, and those
/// older than `oldest_ms` (0: no age bound), with their index entries.
macro_rules! trim_dead_function {
    () => {
        r"
local function drop_dead(dead, deadids, entries)
  for _, e in ipairs(entries) do
    redis.call('XDEL', dead, e[1])
    if e[2] and e[2][2] then redis.call('HDEL', deadids, e[2][2]) end
  end
end
local function trim_dead(dead, deadids, count, oldest_ms)
  local over = redis.call('XLEN', dead) - tonumber(count)
  if over > 0 then drop_dead(dead, deadids, redis.call('XRANGE', dead, '-', '+', 'COUNT', over)) end
  if tonumber(oldest_ms) > 0 then
    drop_dead(dead, deadids, redis.call('XRANGE', dead, '-', tostring(tonumber(oldest_ms) - 1), 'COUNT', 1000))
  end
end"
    };
}

pub(super) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        ring_function!(),
        admit_function!(),
        r"
-- KEYS: stream, delayed, dedup, job hash, idle flag, prioritized, seq
-- ARGV: id (a delayed job's) or suffix (an immediate job's), payload, attempt, max, backoff,
--       enqueued_at, due_ms (0 = now), dedup_window_ms (0 = none), max_waiting, wake channel,
--       priority ('' = the queue has none), sleepers ('' = none), traceparent ('' = none)
-- A job of a queue with priorities keeps ARGV id and waits in `prioritized` (or `delayed`).
-- An immediate job's id is `ENTRY.SUFFIX`: its stream entry's id (found without an index:
-- see `lookup`) and ARGV suffix (random, stored as `x`), so ids stay unique across queues.
-- A delayed job keeps ARGV id, which its entry carries as `id` once promoted.
if ARGV[8] ~= '0' then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {'dup', existing} end
end
local waiting = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if ARGV[11] ~= '' then waiting = waiting + redis.call('ZCARD', KEYS[6]) end
if waiting >= tonumber(ARGV[9]) then return {'full', tostring(waiting)} end
local id = ARGV[1]
-- The trace context is written only when there is one, so jobs without cost nothing more.
local function traced(fields)
  if ARGV[13] and ARGV[13] ~= '' then
    fields[#fields + 1] = 'tc'
    fields[#fields + 1] = ARGV[13]
  end
  return fields
end
if ARGV[11] ~= '' then
  redis.call('HSET', KEYS[4], unpack(traced({'id', id, 'p', ARGV[2], 'a', ARGV[3], 'm', ARGV[4], 'b', ARGV[5], 't', ARGV[6], 'q', ARGV[11]})))
  if ARGV[7] == '0' then
    admit(KEYS[6], KEYS[7], KEYS[4], id, nil, ARGV[11])
    ring(KEYS[5], ARGV[10], ARGV[12])
  else
    redis.call('ZADD', KEYS[2], ARGV[7], id)
  end
elseif ARGV[7] == '0' then
  id = redis.call('XADD', KEYS[1], '*', unpack(traced({'x', ARGV[1], 'p', ARGV[2], 'a', ARGV[3], 'm', ARGV[4], 'b', ARGV[5], 't', ARGV[6]}))) .. '.' .. ARGV[1]
  ring(KEYS[5], ARGV[10])
else
  redis.call('HSET', KEYS[4], unpack(traced({'id', id, 'p', ARGV[2], 'a', ARGV[3], 'm', ARGV[4], 'b', ARGV[5], 't', ARGV[6]})))
  redis.call('ZADD', KEYS[2], ARGV[7], id)
end
if ARGV[8] ~= '0' then redis.call('SET', KEYS[3], id, 'PX', ARGV[8]) end
return {'ok', id}
",
    ))
});

pub(super) static RETRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        tell_function!(),
        r"
-- KEYS: stream, delayed, job hash, stats, ids, progress, watched
-- ARGV: entry id, group, due_ms, id, payload, next attempt, max, backoff, enqueued_at, error,
--       events channel, publish command, queue, now, priority, traceparent ('' = none)
if redis.call('XACK', KEYS[1], ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[5], ARGV[4]) == ARGV[1] then redis.call('HDEL', KEYS[5], ARGV[4]) end
redis.call('HDEL', KEYS[6], ARGV[4])
redis.call('HSET', KEYS[3], 'id', ARGV[4], 'p', ARGV[5], 'a', ARGV[6], 'm', ARGV[7], 'b', ARGV[8], 't', ARGV[9], 'e', ARGV[10], 'q', ARGV[15])
if ARGV[16] and ARGV[16] ~= '' then redis.call('HSET', KEYS[3], 'tc', ARGV[16]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('HINCRBY', KEYS[4], 'retried', 1)
tell(KEYS[7], ARGV[4], {ARGV[11], ARGV[12], ARGV[13], ARGV[14]}, false)
return 1
",
    ))
});

pub(super) static BURY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        tell_function!(),
        trim_dead_function!(),
        r"
-- KEYS: stream, dead, stats, ids, progress, dead ids, watched
-- ARGV: entry id, group, keep count, keep oldest ms (0 = no age bound), id, payload, attempt,
--       max, backoff, enqueued_at, error, failed_at, events channel, publish command, queue, now,
--       priority
if redis.call('XACK', KEYS[1], ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[4], ARGV[5]) == ARGV[1] then redis.call('HDEL', KEYS[4], ARGV[5]) end
local g = redis.call('HGET', KEYS[5], ARGV[5])
redis.call('HDEL', KEYS[5], ARGV[5])
local fields = {'id', ARGV[5], 'p', ARGV[6], 'a', ARGV[7], 'm', ARGV[8], 'b', ARGV[9], 't', ARGV[10],
  'error', ARGV[11], 'failed_at', ARGV[12], 'q', ARGV[17]}
if g then fields[#fields + 1] = 'g'; fields[#fields + 1] = g end
redis.call('HSET', KEYS[6], ARGV[5], redis.call('XADD', KEYS[2], '*', unpack(fields)))
redis.call('HINCRBY', KEYS[3], 'failed', 1)
trim_dead(KEYS[2], KEYS[6], ARGV[3], ARGV[4])
tell(KEYS[7], ARGV[5], {ARGV[13], ARGV[14], ARGV[15], ARGV[16]}, true)
return 1
",
    ))
});

/// Acknowledges a batch of finished jobs of one queue, keeping each with its result when
/// the queue's `keep_completed` says so. Only what the host flags is cleaned: the index of a
/// job that moved (its entry is not its id), and the progress of a job that reported some;
/// the common job costs the script XACK, XDEL, one HMGET of the watched jobs and HINCRBY.
/// A job reclaimed meanwhile by another host (its entry gone) is not recorded here.
pub(super) static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        tell_function!(),
        r"
-- KEYS: stream, ids, stats, progress, completed, watched
-- ARGV: group, keep count (0 = keep none), keep oldest ms (0 = no age bound), keep age ms,
--       record prefix, events channel, publish command, queue, now,
--       then per job: entry id, job id, moved (1/0), reported progress (1/0), result,
--       started ms, finished ms
local n = (#ARGV - 9) / 7
local entries, ids, progressed = {}, {}, {}
for i = 0, n - 1 do
  local base = 10 + i * 7
  entries[i + 1] = ARGV[base]
  ids[i + 1] = ARGV[base + 1]
  if ARGV[base + 3] == '1' then progressed[#progressed + 1] = ARGV[base + 1] end
end
if tonumber(ARGV[2]) > 0 then
  local progress = {}
  if #progressed > 0 then
    local values = redis.call('HMGET', KEYS[4], unpack(progressed))
    for j, id in ipairs(progressed) do progress[id] = values[j] end
  end
  for i = 1, n do
    local entry = redis.call('XRANGE', KEYS[1], entries[i], entries[i])
    if #entry > 0 then
      local base = 10 + (i - 1) * 7
      local record = ARGV[5] .. ids[i]
      local fields = entry[1][2]
      fields[#fields + 1] = 'id'; fields[#fields + 1] = ids[i]
      fields[#fields + 1] = 'r'; fields[#fields + 1] = ARGV[base + 4]
      fields[#fields + 1] = 's'; fields[#fields + 1] = ARGV[base + 5]
      fields[#fields + 1] = 'f'; fields[#fields + 1] = ARGV[base + 6]
      if progress[ids[i]] then fields[#fields + 1] = 'g'; fields[#fields + 1] = progress[ids[i]] end
      redis.call('HSET', record, unpack(fields))
      if ARGV[4] ~= '0' then redis.call('PEXPIRE', record, ARGV[4]) end
      redis.call('ZADD', KEYS[5], ARGV[base + 6], ids[i])
    end
  end
  local over = redis.call('ZCARD', KEYS[5]) - tonumber(ARGV[2])
  if over > 0 then
    local gone = redis.call('ZPOPMIN', KEYS[5], over)
    for k = 1, #gone, 2 do redis.call('DEL', ARGV[5] .. gone[k]) end
  end
  if ARGV[3] ~= '0' then
    local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', '(' .. ARGV[3], 'LIMIT', 0, 1000)
    for _, id in ipairs(old) do redis.call('DEL', ARGV[5] .. id) end
    if #old > 0 then redis.call('ZREM', KEYS[5], unpack(old)) end
  end
end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(entries))
redis.call('XDEL', KEYS[1], unpack(entries))
for i = 1, n do
  if ARGV[10 + (i - 1) * 7 + 2] == '1' and redis.call('HGET', KEYS[2], ids[i]) == entries[i] then
    redis.call('HDEL', KEYS[2], ids[i])
  end
end
if #progressed > 0 then redis.call('HDEL', KEYS[4], unpack(progressed)) end
local watched = redis.call('HMGET', KEYS[6], unpack(ids))
for i, w in ipairs(watched) do
  if w then tell(KEYS[6], ids[i], {ARGV[6], ARGV[7], ARGV[8], ARGV[9]}, true) end
end
if acked > 0 then redis.call('HINCRBY', KEYS[3], 'processed', acked) end
return acked
",
    ))
});

pub(super) static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        ring_function!(),
        tell_function!(),
        admit_function!(),
        r"
-- KEYS: delayed, stream, idle flag, ids, watched, prioritized, seq
-- ARGV: now_ms, batch, job hash prefix, wake channel, events channel, publish command, queue,
--       prioritized ('1' when the queue has priorities, else ''), sleepers ('' = none)
-- Returns the due time of the earliest job left (-1: none). Nothing due costs one ZRANGE.
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #head == 0 then return -1 end
if tonumber(head[2]) > tonumber(ARGV[1]) then return head[2] end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  local job = ARGV[3] .. id
  if ARGV[8] ~= '' then
    if redis.call('EXISTS', job) == 1 then admit(KEYS[6], KEYS[7], job, id, nil, redis.call('HGET', job, 'q')) end
  else
    local fields = redis.call('HGETALL', job)
    if #fields > 0 then redis.call('HSET', KEYS[4], id, redis.call('XADD', KEYS[2], '*', unpack(fields))) end
    redis.call('DEL', job)
  end
  redis.call('ZREM', KEYS[1], id)
  tell(KEYS[5], id, {ARGV[5], ARGV[6], ARGV[7], ARGV[1]}, false)
end
if #due > 0 then ring(KEYS[3], ARGV[4], ARGV[9]) end
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
        tell_function!(),
        trim_dead_function!(),
        admit_function!(),
        r"
-- KEYS: stream, dead, stats, idle flag, ids, progress, dead ids, watched, prioritized, seq
-- ARGV: group, consumer, min idle ms, count, error, keep count, failed_at, wake channel,
--       keep oldest ms, events channel, publish command, queue, now,
--       job hash prefix ('' = the queue has no priorities), sleepers ('' = none)
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local n = 0
local buried = false
for _, entry in ipairs(claimed[2]) do
  local f = entry[2]
  if f then
    local h = {}
    for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
    local a = tonumber(h['a'])
    local id = h['id'] or (entry[1] .. '.' .. (h['x'] or ''))
    redis.call('HDEL', KEYS[6], id)
    if a >= tonumber(h['m']) then
      redis.call('HSET', KEYS[7], id, redis.call('XADD', KEYS[2], '*', 'id', id, 'p', h['p'],
        'a', h['a'], 'm', h['m'], 'b', h['b'], 't', h['t'], 'error', ARGV[5], 'failed_at', ARGV[7],
        'q', h['q'] or '0'))
      redis.call('HDEL', KEYS[5], id)
      redis.call('HINCRBY', KEYS[3], 'failed', 1)
      buried = true
    else
      local fields = {'id', id, 'p', h['p'], 'a', tostring(a + 1), 'm', h['m'], 'b', h['b'],
        't', h['t'], 'e', ARGV[5], 'q', h['q'] or '0'}
      if h['tc'] then
        fields[#fields + 1] = 'tc'
        fields[#fields + 1] = h['tc']
      end
      if ARGV[14] ~= '' then
        redis.call('HDEL', KEYS[5], id)
        admit(KEYS[9], KEYS[10], ARGV[14] .. id, id, fields, h['q'])
      else
        redis.call('HSET', KEYS[5], id, redis.call('XADD', KEYS[1], '*', unpack(fields)))
      end
    end
    tell(KEYS[8], id, {ARGV[10], ARGV[11], ARGV[12], ARGV[13]}, false)
  end
  redis.call('XACK', KEYS[1], ARGV[1], entry[1])
  redis.call('XDEL', KEYS[1], entry[1])
  n = n + 1
end
if buried then trim_dead(KEYS[2], KEYS[7], ARGV[6], ARGV[9]) end
if n > 0 then ring(KEYS[4], ARGV[8], ARGV[15]) end
return n
",
    ))
});

pub(super) static RETRY_DEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        ring_function!(),
        tell_function!(),
        admit_function!(),
        r"
-- KEYS: dead, stream, idle flag, ids, dead ids, watched, prioritized, seq
-- ARGV: job id ('' = all), wake channel, events channel, publish command, queue, now,
--       job hash prefix ('' = the queue has no priorities), sleepers ('' = none)
local entries
if ARGV[1] == '' then
  entries = redis.call('XRANGE', KEYS[1], '-', '+')
else
  local at = redis.call('HGET', KEYS[5], ARGV[1])
  if not at then return 0 end
  entries = redis.call('XRANGE', KEYS[1], at, at)
end
local n = 0
for _, entry in ipairs(entries) do
  local f = entry[2]
  local h = {}
  for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
  if ARGV[1] == '' or h['id'] == ARGV[1] then
    local fields = {'id', h['id'], 'p', h['p'], 'a', '1', 'm', h['m'], 'b', h['b'], 't', h['t'],
      'e', h['error'] or '', 'q', h['q'] or '0'}
    if ARGV[7] ~= '' then
      admit(KEYS[7], KEYS[8], ARGV[7] .. h['id'], h['id'], fields, h['q'])
    else
      redis.call('HSET', KEYS[4], h['id'], redis.call('XADD', KEYS[2], '*', unpack(fields)))
    end
    redis.call('XDEL', KEYS[1], entry[1])
    redis.call('HDEL', KEYS[5], h['id'])
    tell(KEYS[6], h['id'], {ARGV[3], ARGV[4], ARGV[5], ARGV[6]}, false)
    n = n + 1
  end
end
if n > 0 then ring(KEYS[3], ARGV[2], ARGV[8]) end
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

/// The read of a queue with priorities (see the module doc): acknowledges the bells the
/// reader was woken by, takes what its stream holds undelivered (nothing, unless a deploy
/// turned priorities on with jobs waiting), then releases the highest-priority jobs into the
/// stream and reads exactly those. Finding nothing, it asks for a ring: on one node it puts
/// its own bell stream in `sleepers` (every reader waiting on the queue is rung, as a
/// channel would reach every subscriber), on a cluster it sets the idle flag.
pub(super) static READ_PRIORITIZED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: stream, idle flag, prioritized, ids, this reader's bell, sleepers
-- ARGV: group, consumer, count, flag ttl ms, job hash prefix, bell ('1' on one node, else ''),
--       then the bell entries to acknowledge
if ARGV[6] ~= '' then
  if #ARGV > 6 then
    local bells = {unpack(ARGV, 7)}
    redis.call('XACK', KEYS[5], ARGV[1], unpack(bells))
    redis.call('XDEL', KEYS[5], unpack(bells))
  end
  if redis.call('EXISTS', KEYS[5]) == 0 then
    pcall(redis.call, 'XGROUP', 'CREATE', KEYS[5], ARGV[1], '0', 'MKSTREAM')
  end
  redis.call('PEXPIRE', KEYS[5], ARGV[4])
end
local n = tonumber(ARGV[3])
local got = {}
local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n, 'STREAMS', KEYS[1], '>')
if read then for _, e in ipairs(read[1][2]) do got[#got + 1] = e end end
if #got < n then
  local top = redis.call('ZPOPMIN', KEYS[3], n - #got)
  local released = 0
  for i = 1, #top, 2 do
    local job = ARGV[5] .. top[i]
    local fields = redis.call('HGETALL', job)
    if #fields > 0 then
      redis.call('HSET', KEYS[4], top[i], redis.call('XADD', KEYS[1], '*', unpack(fields)))
      released = released + 1
    end
    redis.call('DEL', job)
  end
  if released > 0 then
    read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', released, 'STREAMS', KEYS[1], '>')
    if read then for _, e in ipairs(read[1][2]) do got[#got + 1] = e end end
  end
end
if #got > 0 then return {{KEYS[1], got}} end
if ARGV[6] ~= '' then
  redis.call('SADD', KEYS[6], KEYS[5])
  redis.call('PEXPIRE', KEYS[6], ARGV[4])
else
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
end
return false
",
    )
});
