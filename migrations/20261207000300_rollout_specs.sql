-- vyx-fleet: each rollout remembers its target's non-secret spec and the spec the fleet last ran
-- healthily before it (its base). While a rollout is halted, a user who never ran anything is
-- provisioned on the base, so nothing of the halted spec reaches a new user either. Secret values
-- are never stored (only their digest is part of the spec). Guarded: applies again as a no-op.
ALTER TABLE vyx_fleet.rollout
    ADD COLUMN IF NOT EXISTS target_spec jsonb,
    ADD COLUMN IF NOT EXISTS base_spec jsonb;
