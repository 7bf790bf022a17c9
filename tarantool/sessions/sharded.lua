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
local fiber = require('fiber')
local json = require('json')
local log = require('log')

local F = require('sessions.fields')
local buckets = require('sessions.buckets')
local schema = require('sessions.schema')

local INDEX = 'bucket_id'
-- In sessions_state: the replica set's number (use_number).
local NUMBER_KEY = 'replicaset_number'
-- The procedures a router calls on a storage, through vshard.storage.call or on a replica
-- set's master (`info`, and token_storage through `call`), and `peer`, which the other
-- instance of a set asks before it becomes writable (role.lua); the vshard user needs them.
local ROUTED = {'sessions.batch', 'sessions.call', 'sessions.info', 'sessions.peer'}

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

-- An instance's uri without its credentials: `host:port` or `unix/:path`, the address the
-- role file, the logs and `sessions rejoin` name it by (the password stays out of them).
local function address_of(uri)
    local parsed = require('uri').parse(uri)
    if parsed == nil or parsed.host == nil then
        return uri
    end
    return ('%s:%s'):format(parsed.host, parsed.service or '')
end

-- This instance in the configuration: its replica set's uuid, the uris of the other
-- instances of the set (nil when it is alone), whether it is the master (a set with
-- `master` = 'auto' names none: role.lua decides, `failover`), and the other instances'
-- addresses (address_of) with the uri of each, for role.lua; nil when absent.
local function find(cluster, instance)
    for replicaset, set in pairs(cluster.sharding) do
        local replicas = set.replicas or {}
        if replicas[instance] ~= nil then
            local peers, addresses, uris = {}, {}, {}
            for id, replica in pairs(replicas) do
                if id ~= instance then
                    peers[#peers + 1] = replica.uri
                    local address = address_of(replica.uri)
                    addresses[#addresses + 1] = address
                    uris[address] = replica.uri
                end
            end
            return {
                replicaset = replicaset,
                peers = #peers > 0 and peers or nil,
                master = replicas[instance].master == true,
                failover = set.master == 'auto',
                addresses = addresses,
                uris = uris,
            }
        end
    end
    return nil
end

-- The bucket field and its index, in `sessions` and `idempotency` (whose keys move with
-- their sessions), on a data dir that holds no session yet. A single instance's data is
-- refused rather than converted: its tokens name no bucket, so the router would look for
-- each session on whichever replica set the token's bits happen to name, and answer
-- token_not_found for nearly all of them.
local ONCE = 'sessions_sharded_v1'
local function migrate()
    local space, keys = box.space[schema.SPACE], box.space[schema.IDEMPOTENCY]
    if box.space._schema:get({'once' .. ONCE}) == nil and (space:len() > 0 or keys:len() > 0) then
        error(('this data dir holds %d sessions of a single instance, whose tokens name no bucket: '
            .. 'a storage starts from an empty data dir (docs/operations.md, "Sharded cluster")')
            :format(space:len()), 0)
    end
    box.once(ONCE, function()
        log.info('sessions: applying schema migration %s', ONCE)
        local format = space:format()
        format[F.BUCKET_ID] = {name = 'bucket_id', type = 'unsigned'}
        space:format(format)
        local keys_format = keys:format()
        keys_format[F.KEYS.BUCKET_ID] = F.KEYS_BUCKET
        keys:format(keys_format)
        space:create_index(INDEX, {type = 'tree', unique = false, parts = {{field = F.BUCKET_ID}}})
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
    started = {role = 'storage', path = cluster.path, instance = instance, cluster = cluster}
end

-- How often a router looks for masters it cannot reach.
local MASTER_LOOK = 0.25

-- A replica set with `master` = 'auto' fails over by a promote of its replica (role.lua).
-- vshard 0.1.26's router keeps a master it cannot reach: its search asks the known master
-- whether it still is one and, getting no answer, keeps it, so a replica promoted while the
-- old master stays down would never be used (seen here: the promoted replica's users had
-- 503s until the old master came back). Every MASTER_LOOK seconds a master whose connection
-- is down is forgotten (the replica set's own update_master, with no candidate): calls for
-- its buckets then wait for the search, which asks every instance of the set and takes the
-- writable one, or answer MISSING_MASTER at their deadline (503, never a wrong answer).
local function forget_lost_masters()
    local vshard = require('vshard')
    for _, set in pairs(vshard.router.routeall()) do
        local master = set.master
        if set.is_master_auto and master ~= nil and not master:is_connected() then
            set:update_master(master.id, nil)
            vshard.router.master_search_wakeup()
        end
    end
end

local function watch_masters()
    fiber.create(function()
        fiber.name('sessions.router.masters')
        while true do
            fiber.sleep(MASTER_LOOK)
            local ok, err = pcall(forget_lost_masters)
            if not ok then
                log.warn('sessions router: looking at the masters failed: %s', tostring(err))
            end
        end
    end)
end

-- Configure vshard's router role (router.lua), and the look for lost masters.
local function start_router(cluster)
    local vshard = require('vshard')
    vshard.router.cfg(vshard_cfg(cluster))
    started = {role = 'router', path = cluster.path, cluster = cluster}
    watch_masters()
end

-- A reload never drops a replica set, nor renumbers one: the buckets it holds would have no
-- route (a router took such a file, and 2,025 buckets' sessions answered 503), and its
-- sessions' seqs carry its number.
local function check_kept(running, cluster)
    for replicaset in pairs(running.sharding) do
        if cluster.sharding[replicaset] == nil then
            error(('SESSIONS_VSHARD_CONFIG: %s no longer has replica set %s: a reload never removes '
                .. 'one (its buckets would have no route)'):format(cluster.path, replicaset), 0)
        end
        if cluster.numbers[replicaset] ~= running.numbers[replicaset] then
            error(('SESSIONS_VSHARD_CONFIG: %s gives replica set %s another number: its sessions were '
                .. 'numbered with %d'):format(cluster.path, replicaset, running.numbers[replicaset]), 0)
        end
    end
end

-- The operator's step after changing the configuration file (docs/operations.md, "Sharded
-- cluster"): read it again and give vshard its new sharding, on this storage or router, as
-- it would be read at a restart; a storage then wakes its rebalancer (if it is the one that
-- runs it), which moves buckets to a replica set just added. A file that is not a valid
-- configuration, that no longer has this storage, drops a replica set or changes a set's
-- number is refused (check_kept), and the running configuration stays. Answers the replica
-- sets it now knows.
local function reload()
    if started.role == nil then
        error('not a storage or router of the sharded mode', 0)
    end
    local cluster = read_config(started.path)
    check_kept(started.cluster, cluster)
    local vshard = require('vshard')
    if started.role == 'router' then
        vshard.router.cfg(vshard_cfg(cluster))
        started.cluster = cluster
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

-- What a cluster backup (sessions/cluster.py) records of this storage: its replica set, the
-- configuration's sets and numbers it runs with, the bucket count, and whether it is
-- writable (the set's master, which a backup is taken from).
local function layout()
    if started.role ~= 'storage' then
        error('not a storage of the sharded mode', 0)
    end
    local this = find(started.cluster, started.instance)
    local numbers = {}
    for replicaset in pairs(started.cluster.sharding) do
        numbers[replicaset] = started.cluster.numbers[replicaset]
    end
    return {
        replicaset = this.replicaset, instance = started.instance, numbers = numbers,
        bucket_count = buckets.COUNT, ro = box.info.ro,
    }
end

-- A cluster backup keeps buckets where they are while it takes each set's checkpoint:
-- vshard's rebalancer is disabled here for at most `lease` seconds (then enabled again by
-- itself, should the backup's process be gone), or until release(hold). A rebalancer an
-- operator had disabled stays so.
local held = {last = 0, current = nil, was_active = true}

local function release(hold)
    if held.current ~= hold then
        return false
    end
    held.current = nil
    if held.was_active then
        require('vshard').storage.rebalancer_enable()
    end
    return true
end

local function hold_buckets(lease)
    local storage = require('vshard').storage
    if held.current == nil then
        held.was_active = storage.internal.is_rebalancer_active
    end
    storage.rebalancer_disable()
    held.last = held.last + 1
    local hold = held.last
    held.current = hold
    fiber.create(function()
        fiber.sleep(lease)
        if release(hold) then
            log.warn('sessions: a cluster backup held the buckets for %d s: the rebalancer runs again',
                lease)
        end
    end)
    return hold
end

-- Why buckets may still move on this storage (nil once none can): the rebalancer's routes
-- being applied (a disabled rebalancer lets them finish), a bucket being sent by hand, or a
-- bucket whose rows are on their way in or out.
local UNSETTLED = {'sending', 'receiving', 'sent', 'garbage'}
local function moving()
    local internal = require('vshard').storage.internal
    local applier = internal.rebalancer_applier_fiber
    if applier ~= nil and applier:status() ~= 'dead' then
        return 'the rebalancer is sending buckets'
    end
    if next(internal.rebalancer_transfering_buckets or {}) ~= nil then
        return 'a bucket is being sent'
    end
    local status = box.space._bucket.index.status
    for _, name in ipairs(UNSETTLED) do
        local count = status:count({name})
        if count > 0 then
            return ('%d buckets are %s'):format(count, name)
        end
    end
    return nil
end

-- What a snapshot file (a path) holds of the cluster backup's concern: its sessions, the
-- buckets it holds (active or pinned) and any other bucket with its status.
local function snapshot_buckets(path)
    local sessions_id, buckets_id = box.space[schema.SPACE].id, box.space._bucket.id
    local count, held_ids, other = 0, {}, {}
    for _, row in require('xlog').pairs(path) do
        local body = row.BODY
        if body ~= nil and body.space_id == sessions_id then
            count = count + 1
        elseif body ~= nil and body.space_id == buckets_id then
            local tuple = body.tuple
            if tuple[2] == 'active' or tuple[2] == 'pinned' then
                held_ids[#held_ids + 1] = tuple[1]
            else
                other[#other + 1] = {tuple[1], tuple[2]}
            end
        end
    end
    return {sessions = count, buckets = held_ids, unsettled = other}
end

-- The sessions this instance holds for its replica set: on a storage, less the rows of
-- buckets it does not own, on their way in (receiving) or sent and not collected yet (sent,
-- garbage), which the set that owns the bucket counts; a bucket being sent is still this
-- set's. Without it a moved bucket's sessions were counted on both sets until vshard's
-- garbage collector deleted them here (test_sharded_ops.py). An index count per such bucket,
-- of which there are a few at a time.
local NOT_OWNED = {'receiving', 'sent', 'garbage'}
local function stored_sessions()
    local space = box.space[schema.SPACE]
    local count = space:len()
    if not is_storage then
        return count
    end
    local status, by_bucket = box.space._bucket.index.status, space.index[INDEX]
    for _, name in ipairs(NOT_OWNED) do
        for _, bucket in status:pairs({name}) do
            count = count - by_bucket:count({bucket.id})
        end
    end
    return count
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
    address_of = address_of,
    bucket_of_new = bucket_of_new,
    find = find,
    hold_buckets = hold_buckets,
    layout = layout,
    moving = moving,
    release = release,
    snapshot_buckets = snapshot_buckets,
    migrate = migrate,
    read_config = read_config,
    reload = reload,
    start_router = start_router,
    start_storage = start_storage,
    stored_sessions = stored_sessions,
    use_number = use_number,
}
