-- A storage of the sharded mode (storage.lua): the cluster's configuration, the bucket
-- field vshard needs in the sharded spaces, and vshard's storage role over the project's
-- procedures. vshard is required only here, and only when a storage starts.
--
-- Why a step of its own rather than the next of schema.lua's migrations: vshard moves the
-- tuples of every space with an index named `bucket_id`, whose first part is an unsigned
-- field no tuple leaves out. A single instance has no use for one, and would pay for it on
-- every session (the field and a tree index entry), so only a storage takes the step
-- `sessions_sharded_v1`, after schema.lua's, and the field is declared last in fields.lua,
-- where schema.lua's migrations never format it. A later migration that appends a field
-- puts it after `bucket_id`, nullable on a single instance.
local json = require('json')
local log = require('log')

local F = require('sessions.fields')
local buckets = require('sessions.buckets')
local schema = require('sessions.schema')

local INDEX = 'bucket_id'
-- In sessions_state: the replica set's number (use_number).
local NUMBER_KEY = 'replicaset_number'
-- The procedures a router calls on a storage, through vshard.storage.call or on a replica
-- set's master (`info`, and token_storage through `call`); the vshard user needs them.
local ROUTED = {'sessions.batch', 'sessions.call', 'sessions.info'}

-- Whether this instance is a storage of the sharded mode (set by start_storage).
local is_storage = false
-- What reload needs: this instance's role ('storage' or 'router'), its configuration's path
-- and, on a storage, its uuid (set by start_storage and start_router).
local started = {}

-- vshard's options the configuration may set under "vshard" (how fast the rebalancer moves
-- buckets); anything else there is refused, as the rest of vshard's cfg is ours.
local TUNABLE = {
    rebalancer_max_sending = true,
    rebalancer_max_receiving = true,
    rebalancer_disbalance_threshold = true,
}

-- `numbers`: each replica set's number in its sessions' seqs (schema.next_seq), one per set,
-- 1 to schema.SEQ_SETS, no two alike. A number once used is never given to another set.
local function check_numbers(path, cluster)
    local numbers, seen = cluster.numbers, {}
    if type(numbers) ~= 'table' then
        error(('SESSIONS_VSHARD_CONFIG: %s has no "numbers": {"<replica set uuid>": 1, ...}')
            :format(path), 0)
    end
    for replicaset in pairs(cluster.sharding) do
        local number = numbers[replicaset]
        if type(number) ~= 'number' or number % 1 ~= 0 or number < 1 or number > schema.SEQ_SETS then
            error(('SESSIONS_VSHARD_CONFIG: numbers[%s] must be an integer from 1 to %d')
                :format(replicaset, schema.SEQ_SETS), 0)
        end
        if seen[number] ~= nil then
            error(('SESSIONS_VSHARD_CONFIG: replica sets %s and %s have the same number %d')
                :format(seen[number], replicaset, number), 0)
        end
        seen[number] = replicaset
    end
end

-- vshard's login, in an instance's uri that names none.
local VSHARD_LOGIN = 'vshard'

-- An instance's uri written without credentials (`host:port`) gets vshard's login and
-- `password` (SESSIONS_VSHARD_PASSWORD), so a deployment's file holds no secret
-- (dc.sharded.json); a uri with its own `login:password@` is kept as written.
local function with_credentials(cluster, password)
    for _, set in pairs(cluster.sharding) do
        for _, replica in pairs(set.replicas or {}) do
            if type(replica.uri) == 'string' and not replica.uri:find('@', 1, true) then
                replica.uri = ('%s:%s@%s'):format(VSHARD_LOGIN, password, replica.uri)
            end
        end
    end
end

-- The configuration the operators write once for the whole cluster: vshard's `sharding`
-- (replica sets by uuid, each with `replicas` by uuid, each with `uri` and `master`).
local function read_config(path)
    if path == nil then
        error('SESSIONS_VSHARD_CONFIG is not set: the path of the cluster configuration (JSON)', 0)
    end
    local file = io.open(path, 'r')
    if file == nil then
        error(('SESSIONS_VSHARD_CONFIG: cannot read %s'):format(path), 0)
    end
    local text = file:read('*a')
    file:close()
    local ok, cluster = pcall(json.decode, text)
    if not ok or type(cluster) ~= 'table' or type(cluster.sharding) ~= 'table' then
        error(('SESSIONS_VSHARD_CONFIG: %s is not {"sharding": {...}} in JSON'):format(path), 0)
    end
    cluster.path = path
    check_numbers(path, cluster)
    local tuned = cluster.vshard
    if tuned ~= nil and type(tuned) ~= 'table' then
        error(('SESSIONS_VSHARD_CONFIG: %s: "vshard" must be a map of options'):format(path), 0)
    end
    for name in pairs(tuned or {}) do
        if not TUNABLE[name] then
            error(('SESSIONS_VSHARD_CONFIG: %s: "vshard" may set only rebalancer_max_sending, '
                .. 'rebalancer_max_receiving and rebalancer_disbalance_threshold, not %s')
                :format(path, tostring(name)), 0)
        end
    end
    local password = os.getenv('SESSIONS_VSHARD_PASSWORD')
    if password ~= nil and password ~= '' then
        with_credentials(cluster, password)
    end
    return cluster
end

-- vshard's cfg of a storage or router from the configuration: its sharding, the project's
-- bucket count and the options of "vshard".
local function vshard_cfg(cluster)
    local cfg = {sharding = cluster.sharding, bucket_count = buckets.COUNT}
    for name, value in pairs(cluster.vshard or {}) do
        cfg[name] = value
    end
    return cfg
end

-- This instance in the configuration: its replica set's uuid, the uris of the other
-- instances of the set (nil when it is alone) and whether it is the master; nil when absent.
local function find(cluster, instance)
    for replicaset, set in pairs(cluster.sharding) do
        local replicas = set.replicas or {}
        if replicas[instance] ~= nil then
            local peers = {}
            for id, replica in pairs(replicas) do
                if id ~= instance then
                    peers[#peers + 1] = replica.uri
                end
            end
            return {
                replicaset = replicaset,
                peers = #peers > 0 and peers or nil,
                master = replicas[instance].master == true,
            }
        end
    end
    return nil
end

-- The bucket field and its index, in `sessions` and `idempotency` (whose keys move with
-- their sessions). Existing rows get their user's bucket; a key whose session is gone
-- would only answer a conflict, and is dropped.
local function migrate()
    box.once('sessions_sharded_v1', function()
        log.info('sessions: applying schema migration sessions_sharded_v1')
        local space, keys = box.space[schema.SPACE], box.space[schema.IDEMPOTENCY]
        local format = space:format()
        format[F.BUCKET_ID] = {name = 'bucket_id', type = 'unsigned', is_nullable = true}
        space:format(format)
        local keys_format = keys:format()
        keys_format[F.KEYS.BUCKET_ID] = table.copy(F.KEYS_BUCKET)
        keys_format[F.KEYS.BUCKET_ID].is_nullable = true
        keys:format(keys_format)
        box.begin()
        for _, tuple in space:pairs() do
            space:update(tuple[F.TOKEN], {{'=', F.BUCKET_ID, buckets.of_user(tuple[F.USER_ID])}})
        end
        for _, entry in keys:pairs() do
            local session = space:get(entry[F.KEYS.TOKEN])
            if session == nil then
                keys:delete(entry[F.KEYS.KEY])
            else
                keys:update(entry[F.KEYS.KEY], {{'=', F.KEYS.BUCKET_ID, session[F.BUCKET_ID]}})
            end
        end
        box.commit()
        format[F.BUCKET_ID].is_nullable = false
        space:format(format)
        space:create_index(INDEX, {type = 'tree', unique = false, parts = {{field = F.BUCKET_ID}}})
        keys_format[F.KEYS.BUCKET_ID] = F.KEYS_BUCKET
        keys:format(keys_format)
        keys:create_index(INDEX, {type = 'tree', unique = false, parts = {{field = F.KEYS.BUCKET_ID}}})
    end)
end

-- `cluster_state`: entries of which the cluster has one, each kept with a bucket (its
-- `bucket_id` index makes vshard move it with that bucket): the webhook lease
-- (operations/webhook_lease.lua).
local function migrate_cluster_state()
    box.once('sessions_sharded_v2', function()
        log.info('sessions: applying schema migration sessions_sharded_v2')
        local space = box.schema.space.create('cluster_state', {format = {
            {name = 'name', type = 'string'}, {name = 'bucket_id', type = 'unsigned'},
            {name = 'value', type = 'any'},
        }})
        space:create_index('name', {type = 'tree', parts = {{field = 1}}})
        space:create_index(INDEX, {type = 'tree', unique = false, parts = {{field = 2}}})
    end)
end

-- vshard's user (the login of the instances' uris) may call the procedures the router
-- routes to; they run with their owner's rights, as for the service's user.
local function grant(login)
    for _, name in ipairs(ROUTED) do
        box.schema.user.grant(login, 'execute', 'function', name, {if_not_exists = true})
    end
end

-- The replica set's number goes into every seq from now on. It is kept in sessions_state the
-- first time, and a configuration that later gives the set another is refused: its older
-- seqs carry the first, which another set may now be given.
local function use_number(number)
    local state = box.space[schema.STATE]
    local kept = state:get(NUMBER_KEY)
    if kept ~= nil and kept[2] ~= number then
        error(('SESSIONS_VSHARD_CONFIG gives this replica set the number %d; its sessions were '
            .. 'numbered with %d, which it keeps'):format(number, kept[2]), 0)
    end
    if kept == nil and not box.info.ro then
        state:insert{NUMBER_KEY, number}
    end
    schema.set_seq_set(number)
    -- The feed's seqs carry it too (events.lua), so they order events across sets.
    require('sessions.events').use_set(number)
end

-- Configure vshard's storage role on the box storage.lua configured, after the schema and
-- the procedures exist.
local function start_storage(cluster, instance)
    local vshard = require('vshard')
    -- The routers and the other storages call vshard's procedures by their global names.
    rawset(_G, 'vshard', vshard)
    migrate()
    migrate_cluster_state()
    local this = find(cluster, instance)
    if this == nil then
        error(('SESSIONS_VSHARD_INSTANCE %s is not an instance of SESSIONS_VSHARD_CONFIG')
            :format(tostring(instance)), 0)
    end
    local cfg = vshard_cfg(cluster)
    cfg.box_cfg_mode = 'manual'
    use_number(cluster.numbers[this.replicaset])
    vshard.storage.cfg(cfg, instance)
    if not box.info.ro then
        local set = cluster.sharding[this.replicaset]
        grant(require('uri').parse(set.replicas[instance].uri).login)
    end
    is_storage = true
    started = {role = 'storage', path = cluster.path, instance = instance}
end

-- Configure vshard's router role (router.lua).
local function start_router(cluster)
    local vshard = require('vshard')
    vshard.router.cfg(vshard_cfg(cluster))
    started = {role = 'router', path = cluster.path}
end

-- The operator's step after changing the configuration file (docs/operations.md, "Sharded
-- cluster"): read it again and give vshard its new sharding, on this storage or router, as
-- it would be read at a restart; a storage then wakes its rebalancer (if it is the one that
-- runs it), which moves buckets to a replica set just added. A file that is not a valid
-- configuration, that no longer has this storage or that changes its set's number is
-- refused, and the running configuration stays. Answers the replica sets it now knows.
local function reload()
    if started.role == nil then
        error('not a storage or router of the sharded mode', 0)
    end
    local cluster = read_config(started.path)
    local vshard = require('vshard')
    if started.role == 'router' then
        vshard.router.cfg(vshard_cfg(cluster))
    else
        start_storage(cluster, started.instance)
        vshard.storage.rebalancer_wakeup()
    end
    local sets = 0
    for _ in pairs(cluster.sharding) do
        sets = sets + 1
    end
    log.info('sessions: configuration reloaded from %s, %d replica sets', started.path, sets)
    return {replicasets = sets}
end

-- The bucket a new session of `user_id` is kept with here: its user's in a storage, nil on
-- a single instance (whose rows have no bucket field).
local function bucket_of_new(user_id)
    if is_storage then
        return buckets.of_user(user_id)
    end
    return nil
end

return {
    INDEX = INDEX,
    bucket_of_new = bucket_of_new,
    find = find,
    migrate = migrate,
    read_config = read_config,
    reload = reload,
    start_router = start_router,
    start_storage = start_storage,
    use_number = use_number,
}
