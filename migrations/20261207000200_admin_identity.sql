-- vyx-fleet: the console's admins by name, their sessions, and the append-only trail of what they did.
--
-- Admins sign in with a token of their own (`vyx-fleet admin add NAME` prints it once); only its
-- SHA-256 is stored: the token is 256 random bits, so a plain hash is enough and a stolen table signs
-- nobody in. Sessions live here, not in a signed cookie, so every replica honours a sign-out or a
-- revocation at once. Every control writes one `admin_actions` row in the transaction of its effect;
-- the rows are never updated or deleted (a trigger refuses both), so overrides keep their history.

CREATE TABLE IF NOT EXISTS vyx_fleet.admins (
    name text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    token_sha256 bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text,
    revoked_at timestamptz
);

CREATE TABLE IF NOT EXISTS vyx_fleet.admin_sessions (
    -- SHA-256 of the cookie's value: a leaked table replays no session.
    id_sha256 bytea PRIMARY KEY,
    -- Who the session acts as, as recorded in `admin_actions.admin`.
    display_name text NOT NULL,
    -- The named admin; NULL for a break-glass session (signed in with `ADMIN_TOKEN`).
    admin_name text REFERENCES vyx_fleet.admins (name),
    -- For a break-glass session: a digest of the `ADMIN_TOKEN` it was opened with, so a rotated token
    -- ends it.
    break_glass_key bytea,
    csrf text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    CHECK ((admin_name IS NULL) <> (break_glass_key IS NULL))
);
CREATE INDEX IF NOT EXISTS admin_sessions_admin_idx ON vyx_fleet.admin_sessions (admin_name);

CREATE TABLE IF NOT EXISTS vyx_fleet.admin_actions (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    admin text NOT NULL,
    action text NOT NULL,
    user_id uuid,
    app_name text,
    reason text,
    before text,
    after text
);
CREATE INDEX IF NOT EXISTS admin_actions_user_idx ON vyx_fleet.admin_actions (user_id, at DESC);
CREATE INDEX IF NOT EXISTS admin_actions_at_idx ON vyx_fleet.admin_actions (at DESC);

CREATE OR REPLACE FUNCTION vyx_fleet.admin_actions_append_only()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'vyx_fleet.admin_actions is append-only';
END
$$;
DROP TRIGGER IF EXISTS admin_actions_append_only ON vyx_fleet.admin_actions;
CREATE TRIGGER admin_actions_append_only
    BEFORE UPDATE OR DELETE ON vyx_fleet.admin_actions
    FOR EACH ROW EXECUTE FUNCTION vyx_fleet.admin_actions_append_only();

ALTER TABLE vyx_fleet.admins ENABLE ROW LEVEL SECURITY;
ALTER TABLE vyx_fleet.admin_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE vyx_fleet.admin_actions ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON vyx_fleet.admins, vyx_fleet.admin_sessions, vyx_fleet.admin_actions FROM PUBLIC;
REVOKE ALL ON FUNCTION vyx_fleet.admin_actions_append_only() FROM PUBLIC;
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON vyx_fleet.admins, vyx_fleet.admin_sessions, '
                           'vyx_fleet.admin_actions FROM %I', r);
        END IF;
    END LOOP;
END
$$;
