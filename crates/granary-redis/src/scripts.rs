//! The Lua scripts that make claims and commits atomic inside Redis.
//!
//! Each script touches only the keys of one shard (one hash tag) and checks the shard's copy of
//! the cluster epoch first. The `#!lua` shebang makes Redis (7 or later) check memory before the
//! script starts, so a script either runs to its end or not at all: Redis does not roll back a
//! script that fails half-way.

use redis::Script;

/// Claims a grain and loads its state.
///
/// `KEYS`: epoch, state, owner. `ARGV`: epoch, activation, silo name, silo generation, the
/// activation to replace (empty: none).
///
/// Replies `{"won", version, data|nil}`, `{"owned", activation, silo, generation}` or
/// `{"epoch", found|nil}`.
const CLAIM: &str = r"#!lua
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then return {'epoch', epoch} end
local owner = redis.call('HMGET', KEYS[3], 'a', 's', 'g')
if not owner[1] or owner[1] == ARGV[5] then
  redis.call('HSET', KEYS[3], 'a', ARGV[2], 's', ARGV[3], 'g', ARGV[4])
  owner = {ARGV[2], ARGV[3], ARGV[4]}
end
if owner[1] ~= ARGV[2] then return {'owned', owner[1], owner[2], owner[3]} end
local state = redis.call('HMGET', KEYS[2], 'v', 'd')
return {'won', state[1] or '0', state[2]}
";

/// Commits a state change and its events if the activation owns the grain and the version
/// matches.
///
/// `KEYS`: epoch, state, owner, outbox. `ARGV`: epoch, activation, expected version, change
/// (`w` write, `c` clear, `u` unchanged), data, grain field, event count, then type and
/// payload of each event.
///
/// Replies `{"ok", version}`, `{"owner", found|nil}`, `{"conflict", version}` or
/// `{"epoch", found|nil}`.
const COMMIT: &str = r"#!lua
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then return {'epoch', epoch} end
local owner = redis.call('HGET', KEYS[3], 'a')
if owner ~= ARGV[2] then return {'owner', owner} end
local version = redis.call('HGET', KEYS[2], 'v') or '0'
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
  redis.call('XADD', KEYS[4], '*', 'g', ARGV[6], 'v', next, 'i', i,
    't', ARGV[8 + 2 * i], 'p', ARGV[9 + 2 * i])
end
return {'ok', next}
";

/// Removes a grain's owner entry if it still names the activation.
///
/// `KEYS`: owner. `ARGV`: activation. Replies 1 if removed, 0 otherwise.
const UNREGISTER: &str = r"#!lua
if redis.call('HGET', KEYS[1], 'a') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Writes raw state bytes outside any activation, advancing the version (tools and tests).
///
/// `KEYS`: state. `ARGV`: data. Replies the new version.
const PUT_RAW: &str = r"#!lua
local version = redis.call('HGET', KEYS[1], 'v') or '0'
local next = string.format('%.0f', tonumber(version) + 1)
redis.call('HSET', KEYS[1], 'v', next, 'd', ARGV[1])
return next
";

/// The scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) claim: Script,
    pub(crate) commit: Script,
    pub(crate) unregister: Script,
    pub(crate) put_raw: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            claim: Script::new(CLAIM),
            commit: Script::new(COMMIT),
            unregister: Script::new(UNREGISTER),
            put_raw: Script::new(PUT_RAW),
        }
    }

    /// The raw text of the commit script, for benchmarks that measure it without the store.
    #[must_use]
    pub(crate) fn commit_source() -> &'static str {
        COMMIT
    }
}
