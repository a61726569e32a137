//! Seeding a converged fleet directly (the steady-state, reaction and deprovision runs start from
//! one): apps through the simulator's API with its limits and delays off, rows as the converge
//! executor leaves them.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;
use vyx_fleet::fly::RateLimits;
use vyx_fleet::fly::{
    CreateAppRequest, CreateMachineRequest, FlyClient, IpType, MachineConfig, MachineState,
};
use vyx_fleet::reconcile::{
    config_digest, desired_config, monthly_cost_estimate_usd, secrets_digest, spec_digest,
};
use vyx_fleet::sim::{RateLimitConfig, Timings};
use vyx_fleet::wiring;

use super::env::{Fleet, IMAGE, ORG, app_name, scaled_sim_limits, scaled_timings};

impl Fleet {
    /// Puts `users` (already seeded as paid) into the converged state directly: each app created in
    /// the simulator through the API with its limits and delays off, then its row written as the
    /// converge executor leaves it. Health checks are spread over the last probe interval, as in a
    /// fleet that has been running for a while.
    pub async fn seed_converged(&mut self, users: &[Uuid]) -> Result<(), String> {
        self.sim.set_limits(&RateLimitConfig::disabled())?;
        self.sim.set_timings(&Timings::instant())?;
        let spec = self.ctx.spec.clone();
        let sem = Arc::new(Semaphore::new(48));
        let mut set = JoinSet::new();
        let mut fly = None;
        for (i, &u) in users.iter().enumerate() {
            // The client keeps each created app's affinity cookie and scans them all on every
            // request (quadratic over a fleet): a fresh client every few hundred apps.
            if i % 500 == 0 {
                fly = Some(
                    wiring::fly_client(&self.settings, RateLimits::disabled())
                        .map_err(|e| e.to_string())?,
                );
            }
            let fly = fly.clone().expect("set above");
            let permit = sem
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let spec = spec.clone();
            set.spawn(async move {
                let r = seed_app(&fly, &spec, u).await;
                drop(permit);
                r
            });
        }
        let mut seeded = Vec::with_capacity(users.len());
        while let Some(r) = set.join_next().await {
            seeded.push(r.map_err(|e| e.to_string())??);
        }
        let probe_s = self.pass_cfg.plan.probe_interval.num_milliseconds() as f64 / 1000.0;
        for chunk in seeded.chunks(10_000) {
            let col = |f: fn(&Seeded) -> String| chunk.iter().map(f).collect::<Vec<_>>();
            let ids: Vec<Uuid> = chunk.iter().map(|s| s.user).collect();
            let versions: Vec<i64> = chunk.iter().map(|s| s.secrets_version).collect();
            sqlx::query(
                "INSERT INTO public.user_fly_apps (user_id, fly_app_name, fly_org_slug, status, region, \
                   docker_image, deployed_at, last_health_check, health_status, retry_count, \
                   monthly_cost_estimate_usd, cpu_count, memory_mb, fly_app_id, machine_id, \
                   machine_op_id, secrets_version, secrets_digest, ips_ready, config_digest, \
                   spec_digest, healthy_spec_digest, healthy_image) \
                 SELECT u, n, $7, 'active', $8, $9, now(), now() - random() * make_interval(secs => $10), \
                   'healthy', 0, $11::float8::numeric, $12, $13, aid, mid, op, sv, $14, true, $15, \
                   $16, $16, $9 \
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[]) \
                   AS t(u, n, aid, mid, op, sv)",
            )
            .bind(&ids)
            .bind(col(|s| s.name.clone()))
            .bind(col(|s| s.app_id.clone()))
            .bind(col(|s| s.machine_id.clone()))
            .bind(col(|s| s.op.clone()))
            .bind(&versions)
            .bind(ORG)
            .bind(&spec.region)
            .bind(IMAGE)
            .bind(probe_s)
            .bind(monthly_cost_estimate_usd(spec.cpus, spec.memory_mb))
            .bind(spec.cpus as i32)
            .bind(spec.memory_mb as i32)
            .bind(secrets_digest(&spec.secrets))
            .bind(config_digest(&spec))
            .bind(spec_digest(&spec))
            .execute(&self.admin)
            .await
            .map_err(|e| e.to_string())?;
        }
        let _ = sqlx::query("ANALYZE").execute(&self.admin).await;
        // Back to the documented limits and the scaled delays.
        self.sim.set_limits(&scaled_sim_limits(self.scale))?;
        self.sim.set_timings(&scaled_timings(self.scale))?;
        self.sim.clear_calls().await;
        self.seeded_at = Some(std::time::Instant::now());
        Ok(())
    }
}

impl Fleet {
    /// Makes the fleet's newest change a single machine, as in a fleet that has been running: one
    /// app restarted (stop, start) once the seeding is older than the delta overlap. The daemon's
    /// changed-machine list starts at the newest `updated_at` it saw minus the overlap, so on a
    /// fleet seeded in one burst every quiet pass would re-read the whole burst, pages of it.
    pub async fn settle_watermark(&mut self, user: Uuid) -> Result<(), String> {
        self.wait_out_overlap().await;
        let (app, machine): (String, String) = sqlx::query_as(
            "SELECT fly_app_name, machine_id FROM public.user_fly_apps WHERE user_id = $1",
        )
        .bind(user)
        .fetch_one(&self.admin)
        .await
        .map_err(|e| e.to_string())?;
        self.sim.set_limits(&RateLimitConfig::disabled())?;
        self.sim.set_timings(&Timings::instant())?;
        let fly = wiring::fly_client(&self.settings, RateLimits::disabled())
            .map_err(|e| e.to_string())?;
        let e = |e: vyx_fleet::fly::FlyError| format!("restarting {app}: {e}");
        fly.stop_machine(&app, &machine, &Default::default())
            .await
            .map_err(e)?;
        reach(&fly, &app, &machine, MachineState::Stopped).await?;
        fly.start_machine(&app, &machine).await.map_err(e)?;
        reach(&fly, &app, &machine, MachineState::Started).await?;
        self.sim.set_limits(&scaled_sim_limits(self.scale))?;
        self.sim.set_timings(&scaled_timings(self.scale))?;
        self.sim.clear_calls().await;
        Ok(())
    }
}

async fn reach(fly: &FlyClient, app: &str, id: &str, state: MachineState) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if fly
            .get_machine(app, id)
            .await
            .is_ok_and(|m| m.state == state)
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Err(format!("{app}: machine never reached {state:?}"))
}

struct Seeded {
    user: Uuid,
    name: String,
    app_id: String,
    machine_id: String,
    op: String,
    secrets_version: i64,
}

async fn seed_app(
    fly: &FlyClient,
    spec: &vyx_fleet::reconcile::AppSpec,
    user: Uuid,
) -> Result<Seeded, String> {
    let name = app_name(user);
    let e = |e: vyx_fleet::fly::FlyError| format!("seeding {name}: {e}");
    let created = fly
        .create_app(&CreateAppRequest {
            name: name.clone(),
            org_slug: ORG.into(),
            network: Some(name.clone()),
            idempotency_key: None,
        })
        .await
        .map_err(e)?;
    let values: BTreeMap<_, _> = spec
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    let version = fly.set_secrets(&name, &values).await.map_err(e)?;
    fly.assign_ip(&name, IpType::V6).await.map_err(e)?;
    fly.assign_ip(&name, IpType::SharedV4).await.map_err(e)?;
    let op = Uuid::new_v4().simple().to_string();
    let m = fly
        .create_machine(
            &name,
            &CreateMachineRequest {
                config: desired_config(MachineConfig::default(), spec, IMAGE, user, &op),
                region: Some(spec.region.clone()),
                min_secrets_version: Some(version),
                ..Default::default()
            },
        )
        .await
        .map_err(e)?;
    Ok(Seeded {
        user,
        name,
        app_id: created.id,
        machine_id: m.id,
        op,
        secrets_version: version as i64,
    })
}
