"""The feature store's server-side Lua scripts (registered by :class:`FeatureStore` on its client)."""

from __future__ import annotations

# Resolve the current version and read customers' hashes in one atomic round trip.
# KEYS[1]: the current-version pointer. ARGV[1]: "<ns>:fs:v:". ARGV[2..]: customer ids.
# Returns false when nothing was pushed, else {version, features_1, event_time_1, features_2, ...}.
_LOOKUP_LUA = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
local out = {v}
local base = ARGV[1] .. v .. ':c:'
for i = 2, #ARGV do
  local r = redis.call('HMGET', base .. ARGV[i], 'features', 'event_time')
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
end
return out
"""

# Extend the push lock only while this push still holds it.
_REFRESH_LOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# Switch the current version only while this push still holds the lock (atomic).
_SWITCH_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

# One step of removing a key space: SCAN a slice of the keyspace and UNLINK the matching keys that do not
# start with the kept prefix, inside Redis (no key travels to the client). Returns {next cursor, removed}.
# ARGV: cursor, MATCH pattern, COUNT, kept prefix ("" keeps nothing).
_SCAN_UNLINK_LUA = """
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local keep = ARGV[4]
local batch, n = {}, 0
for _, k in ipairs(r[2]) do
  if keep == '' or string.sub(k, 1, #keep) ~= keep then
    batch[#batch + 1] = k
    if #batch == 500 then
      redis.call('UNLINK', unpack(batch))
      n = n + #batch
      batch = {}
    end
  end
end
if #batch > 0 then
  redis.call('UNLINK', unpack(batch))
  n = n + #batch
end
return {r[1], n}
"""

# The last step of removing a version by name, only while this push holds the lock (atomic): UNLINK its
# meta and id list parts and unregister it. KEYS: lock, registry, keys to unlink. ARGV: token, version.
# Returns the number of keys unlinked, or -1 when the lock is not held.
_FORGET_VERSION_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local n = 0
if #KEYS > 2 then n = redis.call('UNLINK', unpack(KEYS, 3)) end
redis.call('SREM', KEYS[2], ARGV[2])
return n
"""

_RELEASE_LOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
