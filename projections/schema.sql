-- The read side. Every table is a fold of the log; `novalog replay` rebuilds them all.

CREATE TABLE IF NOT EXISTS projector_offsets (
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);

CREATE TABLE IF NOT EXISTS servers (
    uuid              text PRIMARY KEY,
    name              text        NOT NULL,
    project_id        text        NOT NULL,
    user_id           text        NOT NULL,
    status            text        NOT NULL,
    vm_state          text        NOT NULL,
    task_state        text,
    power_state       int         NOT NULL,
    host              text,
    node              text,
    availability_zone text,
    flavor            jsonb       NOT NULL,
    image             jsonb,
    addresses         jsonb       NOT NULL,
    key_name          text,
    metadata          jsonb       NOT NULL,
    reservation_id    text        NOT NULL,
    launch_index      int         NOT NULL,
    attempt           int         NOT NULL,
    request_id        text        NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    launched_at       timestamptz,
    fault             jsonb,
    state             jsonb       NOT NULL  -- the whole fold, read back to apply the next event
);
CREATE INDEX IF NOT EXISTS servers_by_project ON servers (project_id, created_at);
CREATE INDEX IF NOT EXISTS servers_building ON servers (updated_at) WHERE vm_state = 'building';
-- GET /servers?changes-since= (Nova's filter; the bench's observer polls it)
CREATE INDEX IF NOT EXISTS servers_changes ON servers (project_id, updated_at);

CREATE TABLE IF NOT EXISTS instance_events (
    event_id      text PRIMARY KEY,  -- first wins: a re-delivered event is ignored
    instance_uuid text        NOT NULL,
    seq           bigserial,
    event_type    text        NOT NULL,
    occurred_at   timestamptz NOT NULL,
    vm_state      text,
    task_state    text,
    producer      text        NOT NULL,
    request_id    text        NOT NULL,
    payload       jsonb       NOT NULL,
    raw           bytea       NOT NULL   -- the event exactly as on the log (time travel folds these)
);
CREATE INDEX IF NOT EXISTS instance_events_by_instance ON instance_events (instance_uuid, seq);

CREATE TABLE IF NOT EXISTS instance_actions (
    instance_uuid text        NOT NULL,
    request_id    text        NOT NULL,
    action        text        NOT NULL,
    project_id    text        NOT NULL,
    user_id       text        NOT NULL,
    start_time    timestamptz NOT NULL,
    finish_time   timestamptz,
    message       text,
    PRIMARY KEY (instance_uuid, request_id)
);

CREATE TABLE IF NOT EXISTS instance_action_events (
    instance_uuid text        NOT NULL,
    request_id    text        NOT NULL,
    event         text        NOT NULL,
    attempt       int         NOT NULL,
    host          text,
    start_time    timestamptz NOT NULL,
    finish_time   timestamptz,
    result        text,
    details       text,
    PRIMARY KEY (instance_uuid, request_id, event, attempt)
);

-- The instance-action steps of one projector batch, in log order: one call instead of a
-- statement per step (projections/writers.py, _Actions). p_kinds: begin | start | finish | end.
CREATE OR REPLACE FUNCTION apply_instance_actions(
    p_kinds text[], p_uuids text[], p_requests text[], p_names text[], p_projects text[],
    p_users text[], p_attempts int[], p_hosts text[], p_at timestamptz[], p_results text[],
    p_details text[]) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_kinds, 1), 0) LOOP
        CASE p_kinds[i]
        WHEN 'begin' THEN
            INSERT INTO instance_actions (instance_uuid, request_id, action, project_id,
                                          user_id, start_time)
            VALUES (p_uuids[i], p_requests[i], p_names[i], p_projects[i], p_users[i], p_at[i])
            ON CONFLICT DO NOTHING;
        WHEN 'start' THEN
            INSERT INTO instance_action_events (instance_uuid, request_id, event, attempt, host,
                                                start_time)
            VALUES (p_uuids[i], p_requests[i], p_names[i], p_attempts[i], p_hosts[i], p_at[i])
            ON CONFLICT DO NOTHING;
        WHEN 'finish' THEN
            -- an upsert: the host's answer can reach the log before the conductor's
            -- dispatch that starts the step, and then the late start changes nothing
            INSERT INTO instance_action_events AS e (instance_uuid, request_id, event, attempt,
                                                     host, start_time, finish_time, result,
                                                     details)
            VALUES (p_uuids[i], p_requests[i], p_names[i], p_attempts[i], p_hosts[i], p_at[i],
                    p_at[i], p_results[i], p_details[i])
            ON CONFLICT (instance_uuid, request_id, event, attempt) DO UPDATE SET
                finish_time = excluded.finish_time, result = excluded.result,
                details = excluded.details, host = COALESCE(excluded.host, e.host)
            WHERE e.finish_time IS NULL;
        WHEN 'end' THEN
            UPDATE instance_actions SET finish_time = p_at[i], message = p_details[i]
            WHERE instance_uuid = p_uuids[i] AND request_id = p_requests[i];
        END CASE;
    END LOOP;
END $$;

CREATE TABLE IF NOT EXISTS compute_nodes (
    host                  text PRIMARY KEY,
    node                  text        NOT NULL,
    hypervisor_type       text        NOT NULL DEFAULT 'QEMU',
    host_ip               text,
    cpu_arch              text        NOT NULL DEFAULT 'x86_64',
    vcpus                 int         NOT NULL DEFAULT 0,
    memory_mb             int         NOT NULL DEFAULT 0,
    local_gb              int         NOT NULL DEFAULT 0,
    vcpus_used            int         NOT NULL DEFAULT 0,
    memory_mb_used        int         NOT NULL DEFAULT 0,
    local_gb_used         int         NOT NULL DEFAULT 0,
    running_vms           int         NOT NULL DEFAULT 0,
    cpu_allocation_ratio  float8      NOT NULL DEFAULT 4.0,
    ram_allocation_ratio  float8      NOT NULL DEFAULT 1.0,
    disk_allocation_ratio float8      NOT NULL DEFAULT 1.0,
    updated_at            timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS services (
    host            text        NOT NULL,
    service_binary  text        NOT NULL,
    zone            text        NOT NULL DEFAULT 'nova',
    disabled        boolean     NOT NULL DEFAULT false,
    disabled_reason text,
    last_heartbeat  timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (host, service_binary)
);

CREATE TABLE IF NOT EXISTS flavors (
    flavorid     text PRIMARY KEY,
    name         text    NOT NULL,
    vcpus        int     NOT NULL,
    memory_mb    int     NOT NULL,
    root_gb      int     NOT NULL,
    ephemeral_gb int     NOT NULL,
    swap_mb      int     NOT NULL,
    is_public    boolean NOT NULL,
    extra_specs  jsonb   NOT NULL
);

CREATE TABLE IF NOT EXISTS images (
    image_id         text PRIMARY KEY,
    name             text        NOT NULL,
    status           text        NOT NULL,
    disk_format      text        NOT NULL,
    container_format text        NOT NULL,
    size             bigint      NOT NULL,
    checksum         text        NOT NULL,
    min_disk         int         NOT NULL,
    min_ram          int         NOT NULL,
    location         text        NOT NULL,
    visibility       text        NOT NULL,
    properties       jsonb       NOT NULL,
    owner            text,
    os_hash_value    text,
    virtual_size     bigint,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz
);

CREATE TABLE IF NOT EXISTS networks (
    network_id       text PRIMARY KEY,
    name             text    NOT NULL,
    cidr             text    NOT NULL,
    gateway_ip       text    NOT NULL,
    allocation_start text    NOT NULL,
    allocation_end   text    NOT NULL,
    project_id       text,
    shared           boolean NOT NULL,
    subnet_name      text  -- null: the bootstrap's, named <network>-subnet
);

CREATE TABLE IF NOT EXISTS projects (
    project_id text PRIMARY KEY,
    name       text NOT NULL,
    domain     text NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    user_id            text PRIMARY KEY,
    name               text NOT NULL,
    password_hash      text NOT NULL,
    default_project_id text,
    domain             text NOT NULL
);

CREATE TABLE IF NOT EXISTS role_assignments (
    user_id    text NOT NULL,
    project_id text NOT NULL,
    role       text NOT NULL,
    PRIMARY KEY (user_id, project_id, role)
);

CREATE TABLE IF NOT EXISTS quotas (
    project_id text NOT NULL,
    resource   text NOT NULL,
    hard_limit int  NOT NULL,
    PRIMARY KEY (project_id, resource)
);

CREATE TABLE IF NOT EXISTS keypairs (
    user_id     text        NOT NULL,
    name        text        NOT NULL,
    public_key  text        NOT NULL,
    fingerprint text        NOT NULL,
    type        text        NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, name)
);

CREATE TABLE IF NOT EXISTS server_groups (
    group_id   text PRIMARY KEY,
    name       text        NOT NULL,
    policy     text        NOT NULL,
    project_id text        NOT NULL,
    user_id    text,
    created_at timestamptz NOT NULL
);

-- Nova's migrations (GET /os-migrations): every move of an instance, keyed by the
-- conductor's migration id; the API shows a number derived from it as `id`.
CREATE TABLE IF NOT EXISTS migrations (
    migration_id   text PRIMARY KEY,
    instance_uuid  text        NOT NULL,
    project_id     text        NOT NULL,
    migration_type text        NOT NULL,  -- resize, migration, live-migration, evacuation
    status         text        NOT NULL,
    source_compute text        NOT NULL,
    source_node    text        NOT NULL,
    dest_compute   text,
    dest_node      text,
    old_flavor_id  text        NOT NULL,
    new_flavor_id  text        NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS migrations_by_instance ON migrations (instance_uuid, created_at);

-- Block storage (Cinder's volumes and attachments): the fold of the volumes topic
-- (novalog/domain/volume.py). A deleted volume's row goes; its events stay.
CREATE TABLE IF NOT EXISTS volumes (
    volume_id         text PRIMARY KEY,
    project_id        text        NOT NULL,
    user_id           text        NOT NULL,
    name              text,
    description       text,
    size_gb           int         NOT NULL,
    status            text        NOT NULL,
    volume_type       text        NOT NULL,
    availability_zone text        NOT NULL,
    image_id          text,
    bootable          boolean     NOT NULL,
    metadata          jsonb       NOT NULL,
    connection        jsonb,  -- how a host reaches it (Cinder's connection_info)
    reason            text,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    state             jsonb       NOT NULL  -- the whole fold, read back to apply the next event
);
CREATE INDEX IF NOT EXISTS volumes_by_project ON volumes (project_id, created_at);

CREATE TABLE IF NOT EXISTS volume_attachments (
    attachment_id text PRIMARY KEY,
    volume_id     text        NOT NULL,
    instance_uuid text        NOT NULL,
    attach_status text        NOT NULL,  -- reserved, attaching, attached, detaching
    host          text,
    device        text,
    attached_at   timestamptz
);
CREATE INDEX IF NOT EXISTS volume_attachments_by_instance ON volume_attachments (instance_uuid);
CREATE INDEX IF NOT EXISTS volume_attachments_by_volume ON volume_attachments (volume_id);

CREATE TABLE IF NOT EXISTS volume_events (
    event_id    text PRIMARY KEY,  -- first wins: a re-delivered event is ignored
    volume_id   text        NOT NULL,
    seq         bigserial,
    event_type  text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    status      text        NOT NULL,  -- after the event
    producer    text        NOT NULL,
    request_id  text        NOT NULL,
    raw         bytea       NOT NULL   -- the event exactly as on the log (time travel)
);
CREATE INDEX IF NOT EXISTS volume_events_by_volume ON volume_events (volume_id, seq);
