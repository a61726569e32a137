//! Access to the simulator's world, and the ordered index of the org machine list.
//!
//! Every handler takes the world through [`Shared::world`]: a guard that counts a *version* each
//! time the world was borrowed mutably. The org-wide machine list (§3.9) pages in
//! `(updated_at, id)` order; scanning the fleet for each page held the world's lock ~60 ms per
//! page at 100,000 machines, so every other request (a `GET`, a health probe) queued behind a
//! full list. The list now walks an index sorted once per world version: a page costs its own
//! size while nothing changes, and the index is rebuilt only after a change.

use std::ops::{Deref, DerefMut};
use std::sync::MutexGuard;
use std::sync::atomic::{AtomicU64, Ordering};

use super::server::{Shared, lock};
use super::state::World;

/// The world, locked; a mutable borrow bumps the version when the guard is dropped.
pub(crate) struct WorldGuard<'a> {
    world: MutexGuard<'a, World>,
    version: &'a AtomicU64,
    dirty: bool,
}

impl Deref for WorldGuard<'_> {
    type Target = World;
    fn deref(&self) -> &World {
        &self.world
    }
}

impl DerefMut for WorldGuard<'_> {
    fn deref_mut(&mut self) -> &mut World {
        self.dirty = true;
        &mut self.world
    }
}

impl Drop for WorldGuard<'_> {
    fn drop(&mut self) {
        // Still under the lock: a reader that sees the new world sees the new version.
        if self.dirty {
            self.version.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl WorldGuard<'_> {
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }
}

impl Shared {
    pub(crate) fn world(&self) -> WorldGuard<'_> {
        WorldGuard {
            world: lock(&self.world),
            version: &self.world_version,
            dirty: false,
        }
    }
}

/// Every machine of every org, in list order: `(org, updated_at µs, machine id, app name)`.
#[derive(Debug, Default)]
pub(crate) struct OrgIndex {
    version: Option<u64>,
    entries: Vec<(String, i64, String, String)>,
}

impl OrgIndex {
    /// The entries of `org` from the first with `(µs, id) >= from`, for a world at `world`'s
    /// version (rebuilt first if the world changed since).
    pub fn from<'a>(
        &'a mut self,
        world: &WorldGuard<'_>,
        org: &str,
        from: (i64, &str),
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        if self.version != Some(world.version()) {
            self.rebuild(world);
            self.version = Some(world.version());
        }
        let start = self
            .entries
            .partition_point(|(o, t, id, _)| (o.as_str(), *t, id.as_str()) < (org, from.0, from.1));
        let org = org.to_string();
        self.entries[start..]
            .iter()
            .take_while(move |(o, ..)| *o == org)
            .map(|(_, _, id, app)| (app.as_str(), id.as_str()))
    }

    fn rebuild(&mut self, world: &World) {
        let mut entries: Vec<(String, i64, String, String)> = world
            .apps
            .values()
            .flat_map(|a| {
                a.machines.values().map(move |m| {
                    (
                        a.org.clone(),
                        m.updated_at.timestamp_micros(),
                        m.id.clone(),
                        a.name.clone(),
                    )
                })
            })
            .collect();
        entries.sort_unstable();
        self.entries = entries;
    }
}
