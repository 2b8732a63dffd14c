"""The Lua scripts of the Redis job store (:mod:`.redis_jobs`), each run atomically by Redis.

Every script starts with :data:`COMMON` (its helpers); ``ARGV[1]`` is always the keys' prefix
``P``, the comment above each script says what follows and what it returns.
"""

COMMON = """
local P = ARGV[1]
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function load(id)
  local s = redis.call('GET', P .. 'job:' .. id)
  if s then return cjson.decode(s) end
  return nil
end
local function save(job) redis.call('SET', P .. 'job:' .. job.id, cjson.encode(job)) end
local function move(job, status)
  redis.call('HINCRBY', P .. 'counts', job.status, -1)
  redis.call('HINCRBY', P .. 'counts', status, 1)
  job.status = status
end
local function unqueue(job)
  redis.call('ZREM', P .. 'queued', job.id)
  redis.call('ZREM', P .. 'queued:' .. job.batch_key, job.id)
  redis.call('ZREM', P .. 'running', job.id)
  redis.call('ZREM', P .. 'inflight:' .. job.key, job.id)
end
local function changed() redis.call('PUBLISH', P .. 'changed', '1') end
"""

# ARGV: P, id, key, batch_key, model, request, deadline, use_cache, cached id or '',
# max_queued, cache_ttl, subscription token
SUBMIT = """
local id, key, bk = ARGV[2], ARGV[3], ARGV[4]
local t = now()
if ARGV[8] == '1' then
  if ARGV[9] ~= '' then
    local hit = load(ARGV[9])
    if hit and hit.status == 'done' and hit.finished > t - tonumber(ARGV[11]) then
      local job = {id = id, key = key, batch_key = bk, model = ARGV[5], request = ARGV[6],
        status = 'done', created = t, started = t, finished = t, deadline = tonumber(ARGV[7]),
        progress = 1, attempts = 0, lease_until = cjson.null, subscribers = 1,
        result = hit.result, error_code = cjson.null, error = cjson.null, cache_hit = true,
        batch_size = hit.batch_size, worker = cjson.null, seq = 0}
      save(job)
      redis.call('HINCRBY', P .. 'counts', 'done', 1)
      redis.call('ZADD', P .. 'done', t, id)
      redis.call('HINCRBY', P .. 'refs', hit.result, 1)
      -- The audio is kept as long as this job is done, as SQLite keeps its file for every
      -- done job using it (RedisResults sets TTL + 60 s when it writes it).
      redis.call('PEXPIRE', P .. 'result:' .. hit.result,
        math.floor((tonumber(ARGV[11]) + 60) * 1000))
      changed()
      return {'hit', id}
    end
  end
  local live = redis.call('ZRANGE', P .. 'inflight:' .. key, 0, 0)[1]
  if live then
    local job = load(live)
    job.subscribers = job.subscribers + 1
    save(job)
    redis.call('HSET', P .. 'subs', ARGV[12], live)
    return {'joined', live}
  end
end
local queued = redis.call('ZCARD', P .. 'queued')
if queued >= tonumber(ARGV[10]) then return {'full', tostring(queued)} end
local seq = redis.call('INCR', P .. 'seq')
save({id = id, key = key, batch_key = bk, model = ARGV[5], request = ARGV[6], status = 'queued',
  created = t, started = cjson.null, finished = cjson.null, deadline = tonumber(ARGV[7]),
  progress = 0, attempts = 0, lease_until = cjson.null, subscribers = 1, result = cjson.null,
  error_code = cjson.null, error = cjson.null, cache_hit = false, batch_size = cjson.null,
  worker = cjson.null, seq = seq})
redis.call('HINCRBY', P .. 'counts', 'queued', 1)
redis.call('ZADD', P .. 'queued', seq, id)
redis.call('ZADD', P .. 'queued:' .. bk, seq, id)
redis.call('ZADD', P .. 'inflight:' .. key, seq, id)
changed()
redis.call('HSET', P .. 'subs', ARGV[12], id)
return {'queued', id}
"""

# ARGV: P, max_batch, lease, worker, batch key or "" (the oldest job's) -> the claimed jobs, JSON
CLAIM = """
local bk = ARGV[5]
if bk == '' then
  local first = redis.call('ZRANGE', P .. 'queued', 0, 0)[1]
  if not first then return {} end
  bk = load(first).batch_key
end
local ids = redis.call('ZRANGE', P .. 'queued:' .. bk, 0, tonumber(ARGV[2]) - 1)
local t, out = now(), {}
for _, id in ipairs(ids) do
  local job = load(id)
  move(job, 'running')
  job.started, job.lease_until, job.progress = t, t + tonumber(ARGV[3]), 0
  job.attempts, job.batch_size, job.worker = job.attempts + 1, #ids, ARGV[4]
  save(job)
  redis.call('ZREM', P .. 'queued', id)
  redis.call('ZREM', P .. 'queued:' .. bk, id)
  redis.call('ZADD', P .. 'running', job.lease_until, id)
  table.insert(out, cjson.encode(job))
end
changed()
return out
"""

# ARGV: P, lease, progress, ids... -> the ids still running
RENEW = """
local t, out = now(), {}
for i = 4, #ARGV do
  local job = load(ARGV[i])
  if job and job.status == 'running' then
    job.lease_until, job.progress = t + tonumber(ARGV[2]), tonumber(ARGV[3])
    save(job)
    redis.call('ZADD', P .. 'running', job.lease_until, job.id)
    table.insert(out, job.id)
  end
end
changed()
return out
"""

# ARGV: P, id, result
FINISH = """
local job = load(ARGV[2])
if not job or job.status ~= 'running' then return 0 end
unqueue(job)
move(job, 'done')
job.finished, job.progress, job.result, job.lease_until = now(), 1, ARGV[3], cjson.null
save(job)
redis.call('ZADD', P .. 'done', job.finished, job.id)
redis.call('HINCRBY', P .. 'refs', job.result, 1)
redis.call('SET', P .. 'cached:' .. job.key, job.id)
changed()
return 1
"""

# ARGV: P, id, code, message
FAIL = """
local job = load(ARGV[2])
if not job or (job.status ~= 'queued' and job.status ~= 'running') then return 0 end
unqueue(job)
move(job, 'failed')
job.finished, job.error_code, job.error, job.lease_until = now(), ARGV[3], ARGV[4], cjson.null
save(job)
changed()
return 1
"""

# ARGV: P, id, subscription or '' -> the job, JSON, or nil
CANCEL = """
local job = load(ARGV[2])
if not job then return nil end
if ARGV[3] ~= '' and (job.status == 'queued' or job.status == 'running') then
  -- a subscription: only its own interest, once (JobStore.cancel)
  if redis.call('HGET', P .. 'subs', ARGV[3]) ~= ARGV[2] then return cjson.encode(job) end
  redis.call('HDEL', P .. 'subs', ARGV[3])
end
if job.status == 'queued' or job.status == 'running' then
  if job.subscribers > 1 then
    job.subscribers = job.subscribers - 1
  else
    unqueue(job)
    move(job, 'cancelled')
    job.finished, job.subscribers, job.lease_until = now(), 0, cjson.null
  end
  save(job)
  changed()
end
return cjson.encode(job)
"""

# ARGV: P, now or '' (Redis' clock), max attempts, poisoned message
#   -> {how many were queued again, the ids of those failed as poisoned...}
REQUEUE_LOST = """
local cutoff = ARGV[2]
if cutoff == '' then cutoff = tostring(now()) end
local ids = redis.call('ZRANGE', P .. 'running', '-inf', '(' .. cutoff, 'BYSCORE')
local requeued, poisoned = 0, {}
for _, id in ipairs(ids) do
  local job = load(id)
  if job.attempts >= tonumber(ARGV[3]) then  -- poisoned: see JobStore.requeue_lost
    unqueue(job)
    move(job, 'failed')
    job.finished, job.error_code, job.error = now(), 'poisoned', ARGV[4]
    job.lease_until = cjson.null
    save(job)
    poisoned[#poisoned + 1] = id
  else
    move(job, 'queued')
    job.lease_until, job.progress = cjson.null, 0
    save(job)
    redis.call('ZREM', P .. 'running', id)
    redis.call('ZADD', P .. 'queued', job.seq, id)
    redis.call('ZADD', P .. 'queued:' .. job.batch_key, job.seq, id)
    requeued = requeued + 1
  end
end
if #ids > 0 then changed() end
return {requeued, unpack(poisoned)}
"""

# ARGV: P, cache_ttl, now or '' -> result names no done job uses any more
EXPIRE = """
local t = ARGV[3]
if t == '' then t = now() else t = tonumber(t) end
local ids = redis.call('ZRANGE', P .. 'done', '-inf', '(' .. tostring(t - tonumber(ARGV[2])),
  'BYSCORE')
local out = {}
for _, id in ipairs(ids) do
  local job = load(id)
  move(job, 'expired')
  save(job)
  redis.call('ZREM', P .. 'done', id)
  if redis.call('GET', P .. 'cached:' .. job.key) == id then
    redis.call('DEL', P .. 'cached:' .. job.key)
  end
  if redis.call('HINCRBY', P .. 'refs', job.result, -1) <= 0 then
    redis.call('HDEL', P .. 'refs', job.result)
    table.insert(out, job.result)
  end
end
return out
"""
