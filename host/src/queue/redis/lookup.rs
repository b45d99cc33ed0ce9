//! Reading and steering single jobs on Redis: `job`, `jobs`, `remove` and `progress`.
//!
//! A job in the stream is found by its id: an immediate job's id is `ENTRY.SUFFIX`, its first
//! stream entry's id and a random suffix (kept in the entry as `x`, so ids are unique across
//! queues), so enqueueing and finishing it cost no index; a job that moved to another entry
//! (retried, promoted, reclaimed, revived) is in the queue's `ids` hash (job id → entry),
//! its entry carrying the id as `id`. Else it is found in its job hash (a delayed job, or a
//! waiting one of a queue with priorities, in `prioritized`), its completed record, or the
//! dead letters' `dead:ids` index. Each lookup is one script, so a job moving
//! between states meanwhile is seen in one of them, never in none.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::entries::{self, Fields};
use super::{GROUP, RedisQueue};
use crate::queue::{JobInfo, JobState, QueueError};
use crate::timers::now_ms;

/// Delayed jobs scanned at most to find `limit` failed (or delayed) ones.
const SCAN_DELAYED: usize = 2000;

/// `locate(ids, stream, id)`: the stream entry id and fields of job `id`, if it is in the
/// stream (see the module doc).
macro_rules! locate_function {
    () => {
        r"
local function own_id(e, f)
  local id, x = nil, ''
  for i = 1, #f, 2 do
    if f[i] == 'id' then id = f[i + 1] elseif f[i] == 'x' then x = f[i + 1] end
  end
  return id or (e .. '.' .. x)
end
local function locate(ids, stream, id)
  local e = redis.call('HGET', ids, id)
  if not e then
    e = string.match(id, '^(%d+%-%d+)%.%x+$')
    if not e then return nil end
  end
  local entry = redis.call('XRANGE', stream, e, e)
  if #entry == 0 or own_id(e, entry[1][2]) ~= id then return nil end
  return e, entry[1][2]
end"
    };
}

/// One job, wherever it is: `{state, fields, extra, entry id}` or nil.
static FIND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        locate_function!(),
        r"
-- KEYS: ids, stream, delayed, progress, dead ids, dead, prioritized
-- ARGV: id, group, job hash prefix, record prefix
local e, f = locate(KEYS[1], KEYS[2], ARGV[1])
if e then
  local state = 'waiting'
  if #redis.call('XPENDING', KEYS[2], ARGV[2], e, e, 1) > 0 then state = 'active' end
  return {state, f, redis.call('HGET', KEYS[4], ARGV[1]), e}
end
local h = redis.call('HGETALL', ARGV[3] .. ARGV[1])
if #h > 0 then
  if redis.call('ZSCORE', KEYS[7], ARGV[1]) then return {'waiting', h, false} end
  return {'delayed', h, redis.call('ZSCORE', KEYS[3], ARGV[1])}
end
local r = redis.call('HGETALL', ARGV[4] .. ARGV[1])
if #r > 0 then return {'completed', r, false} end
local d = redis.call('HGET', KEYS[5], ARGV[1])
if d then
  local entry = redis.call('XRANGE', KEYS[6], d, d)
  if #entry > 0 then return {'dead', entry[1][2], false} end
end
return false
",
    ))
});

/// Up to `limit` jobs in one state: a list of `{state, fields, extra, entry id}`.
static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        locate_function!(),
        r"
-- KEYS: stream, delayed, progress, completed, dead, prioritized
-- ARGV: state, limit, group, job hash prefix, record prefix, delayed scan bound
local state, limit = ARGV[1], tonumber(ARGV[2])
local out = {}
if state == 'waiting' then
  local last = '0-0'
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
  if not ok then return out end
  for _, g in ipairs(groups) do
    local name, at
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then at = g[i + 1] end
    end
    if name == ARGV[3] then last = at end
  end
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', limit)) do
    out[#out + 1] = {'waiting', e[2], false, e[1]}
  end
  if #out < limit then
    for _, id in ipairs(redis.call('ZRANGE', KEYS[6], 0, limit - #out - 1)) do
      local h = redis.call('HGETALL', ARGV[4] .. id)
      if #h > 0 then out[#out + 1] = {'waiting', h, false} end
    end
  end
elseif state == 'active' then
  local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[3], '-', '+', limit)
  if not ok then return out end
  for _, p in ipairs(pending) do
    local entry = redis.call('XRANGE', KEYS[1], p[1], p[1])
    if #entry > 0 then
      local f = entry[1][2]
      out[#out + 1] = {'active', f, redis.call('HGET', KEYS[3], own_id(p[1], f)), p[1]}
    end
  end
elseif state == 'delayed' or state == 'failed' then
  local due = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[6]) - 1, 'WITHSCORES')
  for i = 1, #due, 2 do
    local h = redis.call('HGETALL', ARGV[4] .. due[i])
    local failed = false
    for k = 1, #h, 2 do if h[k] == 'e' then failed = true end end
    if #h > 0 and (failed == (state == 'failed')) then out[#out + 1] = {'delayed', h, due[i + 1]} end
    if #out >= limit then break end
  end
elseif state == 'completed' then
  for _, id in ipairs(redis.call('ZREVRANGE', KEYS[4], 0, limit - 1)) do
    local r = redis.call('HGETALL', ARGV[5] .. id)
    if #r > 0 then out[#out + 1] = {'completed', r, false} end
  end
elseif state == 'dead' then
  for _, e in ipairs(redis.call('XREVRANGE', KEYS[5], '+', '-', 'COUNT', limit)) do
    out[#out + 1] = {'dead', e[2], false}
  end
end
return out
",
    ))
});

/// Removes a waiting, delayed or failed job: returns the state it was in, or why not.
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        super::scripts::tell_function!(),
        locate_function!(),
        r"
-- KEYS: ids, stream, delayed, progress, dead ids, watched, prioritized
-- ARGV: id, group, job hash prefix, record prefix, events channel, publish command, queue, now
local events = {ARGV[5], ARGV[6], ARGV[7], ARGV[8]}
local e = locate(KEYS[1], KEYS[2], ARGV[1])
if e then
  if #redis.call('XPENDING', KEYS[2], ARGV[2], e, e, 1) > 0 then return 'active' end
  redis.call('XDEL', KEYS[2], e)
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
  tell(KEYS[6], ARGV[1], events, true)
  return 'waiting'
end
local job = ARGV[3] .. ARGV[1]
if redis.call('EXISTS', job) == 1 then
  local state = 'delayed'
  if redis.call('ZREM', KEYS[7], ARGV[1]) == 1 then
    state = 'waiting'
  elseif redis.call('HEXISTS', job, 'e') == 1 then
    state = 'failed'
  end
  redis.call('DEL', job)
  redis.call('ZREM', KEYS[3], ARGV[1])
  tell(KEYS[6], ARGV[1], events, true)
  return state
end
if redis.call('EXISTS', ARGV[4] .. ARGV[1]) == 1 then return 'completed' end
if redis.call('HEXISTS', KEYS[5], ARGV[1]) == 1 then return 'dead' end
return false
",
    ))
});

/// Keeps a running job's progress, unless it has left the stream (finished, reclaimed).
static PROGRESS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        super::scripts::tell_function!(),
        locate_function!(),
        r"
-- KEYS: ids, progress, watched, stream
-- ARGV: id, entry id, json, events channel, publish command, queue, now
if locate(KEYS[1], KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
tell(KEYS[3], ARGV[1], {ARGV[4], ARGV[5], ARGV[6], ARGV[7]}, false)
return 1
",
    ))
});

impl RedisQueue {
    /// The events arguments every state-changing script ends with.
    pub(super) fn events_args(&self, queue: &str) -> [String; 4] {
        [
            self.events_channel(queue),
            self.pool.publish_command().to_string(),
            queue.to_string(),
            now_ms().to_string(),
        ]
    }

    async fn invoke(
        &self,
        script: &'static Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, QueueError> {
        Ok(self
            .pool
            .run(|mut c| async move {
                let mut inv = script.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                for a in &args {
                    inv.arg(a);
                }
                inv.invoke_async::<Value>(&mut c).await
            })
            .await?)
    }

    pub(super) async fn find_job(
        &self,
        queue: &str,
        id: &str,
    ) -> Result<Option<JobInfo>, QueueError> {
        let keys = self.keys(
            queue,
            &[
                "ids",
                "stream",
                "delayed",
                "progress",
                "dead:ids",
                "dead",
                "prioritized",
            ],
        );
        let args = vec![
            id.to_string(),
            GROUP.to_string(),
            self.key(queue, "job:"),
            self.key(queue, "done:"),
        ];
        let reply = self.invoke(&FIND, keys, args).await?;
        Ok(job_info(&reply, queue))
    }

    pub(super) async fn list_jobs(
        &self,
        queue: &str,
        state: JobState,
        limit: usize,
    ) -> Result<Vec<JobInfo>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys(
            queue,
            &[
                "stream",
                "delayed",
                "progress",
                "completed",
                "dead",
                "prioritized",
            ],
        );
        let args = vec![
            state.as_str().to_string(),
            limit.to_string(),
            GROUP.to_string(),
            self.key(queue, "job:"),
            self.key(queue, "done:"),
            SCAN_DELAYED.max(limit).to_string(),
        ];
        let reply = self.invoke(&LIST, keys, args).await?;
        let Value::Array(items) = reply else {
            return Ok(Vec::new());
        };
        Ok(items
            .iter()
            .filter_map(|item| job_info(item, queue))
            .filter(|info| info.state == state)
            .collect())
    }

    pub(super) async fn remove_job(
        &self,
        queue: &str,
        id: &str,
    ) -> Result<Option<JobState>, QueueError> {
        let keys = self.keys(
            queue,
            &[
                "ids",
                "stream",
                "delayed",
                "progress",
                "dead:ids",
                "watched",
                "prioritized",
            ],
        );
        let mut args = vec![
            id.to_string(),
            GROUP.to_string(),
            self.key(queue, "job:"),
            self.key(queue, "done:"),
        ];
        args.extend(self.events_args(queue));
        let reply = self.invoke(&REMOVE, keys, args).await?;
        let state = match entries::text(&reply) {
            None => return Ok(None),
            Some(s) => s.parse::<JobState>().map_err(QueueError::Unavailable)?,
        };
        match state {
            JobState::Waiting | JobState::Delayed | JobState::Failed => Ok(Some(state)),
            _ => {
                // Refused: describe it as it stands.
                let info = self
                    .find_job(queue, id)
                    .await?
                    .unwrap_or_else(|| JobInfo::new(placeholder(queue, id), state));
                Err(info.refuse_removal())
            }
        }
    }

    pub(super) async fn record_progress(
        &self,
        queue: &str,
        id: &str,
        entry: &str,
        json: &str,
    ) -> Result<(), QueueError> {
        let keys = self.keys(queue, &["ids", "progress", "watched", "stream"]);
        let mut args = vec![id.to_string(), entry.to_string(), json.to_string()];
        args.extend(self.events_args(queue));
        self.invoke(&PROGRESS, keys, args).await?;
        Ok(())
    }
}

/// A job known only by its queue and id (a refused removal raced a retention trim).
fn placeholder(queue: &str, id: &str) -> crate::queue::Job {
    crate::queue::Job {
        id: id.to_string(),
        queue: queue.to_string(),
        payload: String::new(),
        attempt: 0,
        max_attempts: 0,
        backoff: crate::manifest::Backoff::Fixed(std::time::Duration::ZERO),
        enqueued_at_ms: 0,
        last_error: None,
        priority: 0,
        trace_context: None,
    }
}

/// A `{state, fields, extra}` reply as a [`JobInfo`]; `None` for nil or a malformed one.
fn job_info(reply: &Value, queue: &str) -> Option<JobInfo> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let (state, fields, extra, entry) = match parts.as_slice() {
        [state, Value::Array(fields), extra] => (state, fields, extra, None),
        [state, Value::Array(fields), extra, entry] => (state, fields, extra, entries::text(entry)),
        _ => return None,
    };
    let mut state: JobState = entries::text(state)?.parse().ok()?;
    let f = Fields::read(fields);
    let job = f.job(queue, entry)?;
    let extra = entries::text(extra);
    if state == JobState::Delayed && job.last_error.is_some() {
        state = JobState::Failed;
    }
    let number = |v: Option<&str>| v.and_then(|t| t.parse::<f64>().ok()).map(|n| n as u64);
    let mut info = JobInfo::new(job, state);
    match state {
        JobState::Waiting | JobState::Active => info.progress = extra.map(str::to_string),
        JobState::Delayed | JobState::Failed => info.due_at_ms = number(extra),
        JobState::Completed => {
            info.result = f.result.map(str::to_string);
            info.started_at_ms = number(f.started);
            info.finished_at_ms = number(f.finished);
            info.progress = f.progress.map(str::to_string);
        }
        JobState::Dead => {
            info.error = f.error.map(str::to_string);
            info.finished_at_ms = number(f.failed_at);
            info.progress = f.progress.map(str::to_string);
        }
    }
    Some(info)
}
