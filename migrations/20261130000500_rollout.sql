-- vyx-fleet 5: progressive delivery (issue 7). The state a rollout needs to survive a restart or a
-- leader change mid-way without moving any app twice: one row per rollout in `vyx_fleet.rollout`, and
-- per-app progress and rollback facts on `public.user_fly_apps` (nullable: Vyx's readers, the admin
-- page and the Go backend, see the same table they always did).
--
-- Every statement is guarded, so the file applies again as a no-op.

-- One row per target the fleet was ever rolled to; the current rollout is the highest id. Returning to an
-- earlier spec (a manual rollback by configuration) is a new rollout, with a new row and fresh counts.
CREATE TABLE IF NOT EXISTS vyx_fleet.rollout (
    id bigserial PRIMARY KEY,
    -- `spec_digest` of the machine spec apps move to, and its image (for people: the digest is opaque).
    target_digest text NOT NULL,
    target_image text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    -- Summary the leader writes each pass from the wave decision; the per-app columns are the truth.
    -- `failed` counts every app that failed on the target, `rolled_back` those of them put back since.
    waves_done integer NOT NULL DEFAULT 0 CHECK (waves_done >= 0),
    moved integer NOT NULL DEFAULT 0 CHECK (moved >= 0),
    failed integer NOT NULL DEFAULT 0 CHECK (failed >= 0),
    rolled_back integer NOT NULL DEFAULT 0 CHECK (rolled_back >= 0),
    -- Failures an operator resumed past: only failures beyond these can halt the rollout again.
    failures_forgiven integer NOT NULL DEFAULT 0 CHECK (failures_forgiven >= 0),
    halted boolean NOT NULL DEFAULT false,
    -- Fixed kind (`canary_failed`, `too_many_failures`) and the sentence shown to operators.
    halt_kind text,
    halt_reason text,
    halted_at timestamptz,
    resumed_by text,
    resumed_at timestamptz,
    completed_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (NOT halted OR (halt_reason IS NOT NULL AND halted_at IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS rollout_target_idx ON vyx_fleet.rollout (target_digest);

ALTER TABLE public.user_fly_apps
    -- The spec digest the app's machine runs (written once the machine is `started` on it).
    ADD COLUMN IF NOT EXISTS spec_digest text,
    -- The last spec the app ran healthily, for rollback: its digest, its image, and its non-secret
    -- parts (region, guest, env, layout) as JSON. Secret values are never stored: a rollback of a
    -- secrets change restores the machine config with the secrets Fly holds now.
    ADD COLUMN IF NOT EXISTS healthy_spec_digest text,
    ADD COLUMN IF NOT EXISTS healthy_image text,
    ADD COLUMN IF NOT EXISTS healthy_spec jsonb,
    -- The image digest the machine reports (`image_ref.digest`): what a tag really resolved to.
    ADD COLUMN IF NOT EXISTS image_digest text,
    -- Progress in the rollout `rollout_id` (vyx_fleet.rollout.id; no foreign key across the schema
    -- boundary, so the API roles need no reference rights). A row whose `rollout_id` is not the
    -- current rollout's is pending for it, or already on its target.
    ADD COLUMN IF NOT EXISTS rollout_id bigint,
    ADD COLUMN IF NOT EXISTS rollout_state text,
    ADD COLUMN IF NOT EXISTS rollout_wave integer,
    ADD COLUMN IF NOT EXISTS rollout_state_at timestamptz,
    -- The machine version the update returned: health verdicts come from this version only.
    ADD COLUMN IF NOT EXISTS rollout_machine_version text;

-- `rollout_state` takes moving|soaking|healthy|failed|rolled_back. No CHECK constraint: vyx-fleet adds
-- none to Vyx's own tables (a constraint can break a writer we do not know); `db::rollout` writes only
-- those values and reads anything else as still moving, so a stray value never moves an app twice.

-- Like every table in `vyx_fleet`: RLS on as a second wall, and nothing for the API roles (every user
-- app holds the service-role key; it must not be able to halt, resume or steer a rollout).
ALTER TABLE vyx_fleet.rollout ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON vyx_fleet.rollout FROM PUBLIC;
REVOKE ALL ON SEQUENCE vyx_fleet.rollout_id_seq FROM PUBLIC;
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON SCHEMA vyx_fleet FROM %I', r);
            EXECUTE format('REVOKE ALL ON vyx_fleet.rollout FROM %I', r);
            EXECUTE format('REVOKE ALL ON SEQUENCE vyx_fleet.rollout_id_seq FROM %I', r);
        END IF;
    END LOOP;
END
$$;
