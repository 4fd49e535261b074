-- The resource tracker's claims: one row per instance on a host, durable across restarts.
-- A claim is made under a row lock on its host, so two builds can never both take the
-- last free resources (DESIGN.md §1 step 6: the compute claim is the final word).

CREATE TABLE IF NOT EXISTS compute_hosts (
    host                  text PRIMARY KEY,
    vcpus                 int    NOT NULL,
    memory_mb             int    NOT NULL,
    local_gb              int    NOT NULL,
    cpu_allocation_ratio  float8 NOT NULL,
    ram_allocation_ratio  float8 NOT NULL,
    disk_allocation_ratio float8 NOT NULL
);

CREATE TABLE IF NOT EXISTS compute_claims (
    host          text        NOT NULL,
    instance_uuid text        NOT NULL,
    attempt       int         NOT NULL,
    vcpus         int         NOT NULL,
    memory_mb     int         NOT NULL,
    disk_gb       int         NOT NULL,
    -- networking, block_device_mapping, spawning, active, stopped, rescued; a move:
    -- incoming (its destination, until the guest runs there), outgoing (a resize's source,
    -- guest off, until confirm or revert)
    stage         text        NOT NULL,
    command       jsonb       NOT NULL,  -- the BuildAndRunInstance payload
    ports         jsonb       NOT NULL DEFAULT '{}',  -- network id -> ports, as replies arrive
    volumes       jsonb       NOT NULL DEFAULT '{}',  -- volume id -> its disk, once attached
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, instance_uuid)
);
ALTER TABLE compute_claims ADD COLUMN IF NOT EXISTS volumes jsonb NOT NULL DEFAULT '{}';
