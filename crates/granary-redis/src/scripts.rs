//! The Lua scripts that make claims and commits atomic inside Redis.
//!
//! Each script touches only the keys of one shard (one hash tag) and checks the shard's copy of
//! the cluster epoch first. The `#!lua` shebang makes Redis (7 or later) check memory before the
//! script starts, so a script either runs to its end or not at all: Redis does not roll back a
//! script that fails half-way.
//!
//! Scripts are always sent on their own, never inside a pipeline: `redis::Script` loads a
//! script that Redis forgot (`NOSCRIPT`, after a restart or `SCRIPT FLUSH`) and retries, but
//! only outside pipelines.

use redis::Script;

/// Claims a grain and loads its state: the claim succeeds if the grain has no owner entry, or
/// one of the activation to replace (known to be gone).
///
/// `KEYS`: epoch, grain. `ARGV`: epoch, the new owner entry, the activation to replace (empty:
/// none).
///
/// Replies `{"won", version, data|nil}`, `{"owned", owner entry}` or `{"epoch", found|nil}`.
const CLAIM: &str = r"#!lua
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then return {'epoch', epoch} end
local grain = redis.call('HMGET', KEYS[2], 'a', 'v', 'd')
if not grain[1] or string.match(grain[1], '^[^|]*') == ARGV[3] then
  redis.call('HSET', KEYS[2], 'a', ARGV[2])
  grain[1] = ARGV[2]
end
if grain[1] ~= ARGV[2] then return {'owned', grain[1]} end
return {'won', grain[2] or '0', grain[3]}
";

/// Commits a state change, its events and its reminder changes if the activation owns the
/// grain and the version matches.
///
/// `KEYS`: epoch, grain, outbox, and with reminder changes only, the grain's reminders and the
/// shard's reminder index. `ARGV`: epoch, activation, expected version, change (`w` write, `c`
/// clear, `u` unchanged), data, grain field, event count, then type, payload and trace (hex or
/// empty) of each event, then (optional, default 0) the reminder change count and, per change,
/// `s` (set) or `d` (delete), name, period ms and next due ms (empty for a delete). A reminder is a field of the grain's reminder hash
/// (`<period>:<next due>`) and a member of the index (`<name length>:<name><grain field>`)
/// scored by its next due time.
///
/// Replies `{"ok", version}`, `{"owner"}`, `{"conflict", version}` or `{"epoch", found|nil}`.
const COMMIT: &str = r"#!lua
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then return {'epoch', epoch} end
local grain = redis.call('HMGET', KEYS[2], 'a', 'v')
if not grain[1] or string.match(grain[1], '^[^|]*') ~= ARGV[2] then return {'owner'} end
local version = grain[2] or '0'
if version ~= ARGV[3] then return {'conflict', version} end
local next = string.format('%.0f', tonumber(version) + 1)
if ARGV[4] == 'w' then
  redis.call('HSET', KEYS[2], 'v', next, 'd', ARGV[5])
elseif ARGV[4] == 'c' then
  redis.call('HDEL', KEYS[2], 'd')
  redis.call('HSET', KEYS[2], 'v', next)
else
  redis.call('HSET', KEYS[2], 'v', next)
end
for i = 0, tonumber(ARGV[7]) - 1 do
  redis.call('XADD', KEYS[3], '*', 'g', ARGV[6], 'v', next, 'i', i,
    't', ARGV[8 + 3 * i], 'p', ARGV[9 + 3 * i], 'tr', ARGV[10 + 3 * i])
end
local base = 8 + 3 * tonumber(ARGV[7])
for i = 0, tonumber(ARGV[base] or '0') - 1 do
  local at = base + 1 + 4 * i
  local name = ARGV[at + 1]
  local member = string.len(name) .. ':' .. name .. ARGV[6]
  if ARGV[at] == 's' then
    redis.call('HSET', KEYS[4], name, ARGV[at + 2] .. ':' .. ARGV[at + 3])
    redis.call('ZADD', KEYS[5], ARGV[at + 3], member)
  else
    redis.call('HDEL', KEYS[4], name)
    redis.call('ZREM', KEYS[5], member)
  end
end
return {'ok', next}
";

/// Removes a grain's owner entry if it still names the activation.
///
/// `KEYS`: grain. `ARGV`: activation. Replies 1 if removed, 0 otherwise.
const UNREGISTER: &str = r"#!lua
local owner = redis.call('HGET', KEYS[1], 'a')
if owner and string.match(owner, '^[^|]*') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'a')
  return 1
end
return 0
";

/// Writes raw state bytes outside any activation, advancing the version (tools and tests).
///
/// `KEYS`: grain. `ARGV`: data. Replies the new version.
const PUT_RAW: &str = r"#!lua
local version = redis.call('HGET', KEYS[1], 'v') or '0'
local next = string.format('%.0f', tonumber(version) + 1)
redis.call('HSET', KEYS[1], 'v', next, 'd', ARGV[1])
return next
";

/// Moves outbox entries to the shard's dead-letter stream, each with its reason: the entry's
/// fields, `ms` (its commit time, when not there yet) and `reason`, then `XDEL` from the
/// outbox. An id no longer in the outbox is skipped.
///
/// `KEYS`: outbox, dead-letter stream. `ARGV`: pairs of entry id and reason. Replies the number
/// moved.
const DEAD_LETTER: &str = r"#!lua
local moved = 0
for i = 1, #ARGV, 2 do
  local found = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i], 'COUNT', 1)
  if #found == 1 then
    local fields = {}
    local has_ms = false
    local from = found[1][2]
    for j = 1, #from, 2 do
      if from[j] == 'ms' then has_ms = true end
      if from[j] ~= 'reason' then
        table.insert(fields, from[j])
        table.insert(fields, from[j + 1])
      end
    end
    if not has_ms then
      table.insert(fields, 'ms')
      table.insert(fields, string.match(ARGV[i], '^%d+'))
    end
    table.insert(fields, 'reason')
    table.insert(fields, ARGV[i + 1])
    redis.call('XADD', KEYS[2], '*', unpack(fields))
    redis.call('XDEL', KEYS[1], ARGV[i])
    moved = moved + 1
  end
end
return moved
";

/// Moves dead letters back to the end of the outbox: the entry's fields without `reason`
/// (`ms` stays: the event keeps its commit time), then `XDEL` from the dead-letter stream. An
/// id no longer there is skipped.
///
/// `KEYS`: dead-letter stream, outbox. `ARGV`: entry ids. Replies the number moved.
const REDRIVE: &str = r"#!lua
local moved = 0
for i = 1, #ARGV do
  local found = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i], 'COUNT', 1)
  if #found == 1 then
    local fields = {}
    local from = found[1][2]
    for j = 1, #from, 2 do
      if from[j] ~= 'reason' then
        table.insert(fields, from[j])
        table.insert(fields, from[j + 1])
      end
    end
    redis.call('XADD', KEYS[2], '*', unpack(fields))
    redis.call('XDEL', KEYS[1], ARGV[i])
    moved = moved + 1
  end
end
return moved
";

/// The scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) claim: Script,
    pub(crate) commit: Script,
    pub(crate) unregister: Script,
    pub(crate) put_raw: Script,
    pub(crate) dead_letter: Script,
    pub(crate) redrive: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            claim: Script::new(CLAIM),
            commit: Script::new(COMMIT),
            unregister: Script::new(UNREGISTER),
            put_raw: Script::new(PUT_RAW),
            dead_letter: Script::new(DEAD_LETTER),
            redrive: Script::new(REDRIVE),
        }
    }

    /// The raw text of the commit script, for benchmarks that measure it without the store.
    #[must_use]
    pub(crate) fn commit_source() -> &'static str {
        COMMIT
    }

    /// The raw text of the claim script, for benchmarks that measure it without the store.
    #[must_use]
    pub(crate) fn claim_source() -> &'static str {
        CLAIM
    }
}
