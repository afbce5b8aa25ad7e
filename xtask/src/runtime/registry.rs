//! The fixture registry under [`REGISTRY_DIR`], shared by every process on the host: a lock
//! file, and one file per reserved subnet slot naming the base directory of the fixture that
//! holds it. New fixtures get their id, base directory and slot here; fixtures whose owner died
//! are found and torn down here.
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::files::{lock_file, write_file};
use super::host::{entry_names, is_mount_point, link_exists, pid_alive, process_start};
use super::layout::{Layout, SLOTS, slot_prefix};
use super::teardown::{Footprint, teardown_locked};
use super::{BASE_PARENT_ENV, POD_RANGE, REGISTRY_DIR};

/// `sun_path` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

fn registry_dir() -> PathBuf {
    PathBuf::from(REGISTRY_DIR)
}

fn slots_dir() -> PathBuf {
    registry_dir().join(".slots")
}

pub(super) fn slot_file(slot: u32) -> PathBuf {
    slots_dir().join(slot.to_string())
}

/// The base directory recorded in the slot file at `path`.
fn slot_owner(path: &Path) -> Option<PathBuf> {
    fs::read_to_string(path)
        .ok()
        .map(|owner| PathBuf::from(owner.trim()))
}

/// Exclusive lock over slot allocation and reaping, across processes.
pub(super) fn lock() -> anyhow::Result<File> {
    let dir = registry_dir();
    fs::create_dir_all(slots_dir())
        .with_context(|| format!("cannot create fixture registry {}", dir.display()))?;
    lock_file(&dir.join(".lock"))
}

/// Picks an unused id and base directory, reserves a subnet slot and writes the fixture's
/// record. `base_dir`: the caller's choice of base directory.
pub(super) fn create_layout(base_dir: Option<&Path>) -> anyhow::Result<Layout> {
    let _lock = lock()?;
    let (id, base) = loop {
        let id = random_id()?;
        let base = match base_dir {
            Some(dir) => dir.to_path_buf(),
            None => std::env::var_os(BASE_PARENT_ENV)
                .map_or_else(registry_dir, PathBuf::from)
                .join(&id),
        };
        if base_dir.is_some() || (!base.exists() && !link_exists(&format!("kl{id}"))) {
            break (id, base);
        }
    };
    if !base.is_absolute() {
        bail!("fixture base directory {} must be absolute", base.display());
    }
    if is_mount_point(&base) {
        bail!(
            "fixture base directory {} is a mount point; give a directory below it",
            base.display()
        );
    }
    if fs::read_dir(&base).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!(
            "fixture base directory {} exists and is not empty",
            base.display()
        );
    }
    let socket_len = base.join("containerd.sock.ttrpc").as_os_str().len();
    if socket_len > MAX_SOCKET_PATH {
        bail!(
            "fixture base directory {} is too long for unix sockets ({socket_len} > {MAX_SOCKET_PATH} bytes)",
            base.display()
        );
    }
    let slot = free_slot(&id)?;
    let owner_pid = std::process::id();
    let layout = Layout {
        id,
        base,
        slot,
        owner_pid,
        owner_start: process_start(owner_pid).unwrap_or(0),
    };
    fs::create_dir_all(&layout.base)
        .with_context(|| format!("cannot create fixture directory {}", layout.base.display()))?;
    let record =
        serde_json::to_string_pretty(&layout).context("cannot serialise fixture record")?;
    write_file(&layout.record(), &record)?;
    write_file(&slot_file(slot), &format!("{}\n", layout.base.display()))?;
    Ok(layout)
}

/// Eight random hex digits.
fn random_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 4];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(format!("{:08x}", u32::from_be_bytes(bytes)))
}

/// A slot not reserved by a live fixture and not overlapping any route on the host. Called with
/// the registry lock held.
fn free_slot(id: &str) -> anyhow::Result<u32> {
    let routes = ipv4_routes();
    let start = u32::from_str_radix(id, 16).unwrap_or(0) % SLOTS;
    for n in 0..SLOTS {
        let slot = (start + n) % SLOTS;
        if slot_owner(&slot_file(slot)).is_some_and(|owner| owner.exists()) {
            continue;
        }
        let [a, b, c] = slot_prefix(slot);
        let net = u32::from_be_bytes([a, b, c, 0]);
        let overlaps = routes.iter().any(|&(dst, mask)| {
            let common = mask & 0xffff_ff00;
            mask != 0 && (dst & common) == (net & common)
        });
        if !overlaps {
            return Ok(slot);
        }
    }
    bail!(
        "no free /24 left in {POD_RANGE} (slots under {})",
        slots_dir().display()
    )
}

/// `(destination, mask)` of every IPv4 route, from `/proc/net/route`.
fn ipv4_routes() -> Vec<(u32, u32)> {
    let Ok(table) = fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    let parse = |hex: &str| {
        u32::from_str_radix(hex, 16)
            .ok()
            .map(|raw| u32::from_be_bytes(raw.to_ne_bytes()))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            Some((parse(cols.get(1)?)?, parse(cols.get(7)?)?))
        })
        .collect()
}

/// Whether the fixture still holds its subnet slot.
pub(super) fn holds_slot(layout: &Layout) -> bool {
    slot_owner(&slot_file(layout.slot)).is_some_and(|owner| owner == layout.base)
}

/// Frees the fixture's subnet slot, unless another fixture holds it by now. Called with the
/// registry lock held.
pub(super) fn release_slot(layout: &Layout) -> anyhow::Result<()> {
    if !holds_slot(layout) {
        return Ok(());
    }
    let slot = slot_file(layout.slot);
    fs::remove_file(&slot).with_context(|| format!("cannot release subnet slot {}", slot.display()))
}

/// Tears down every fixture in the registry whose owning process is gone. Returns one error
/// per fixture that could not be torn down completely.
#[must_use = "the errors say which stale fixtures could not be torn down"]
pub fn reap_stale() -> Vec<anyhow::Error> {
    let mut errors = Vec::new();
    let Ok(_lock) = lock() else {
        return errors;
    };
    for name in entry_names(&slots_dir()) {
        let slot_path = slots_dir().join(name);
        let Some(base) = slot_owner(&slot_path) else {
            continue;
        };
        let layout = fs::read(base.join("fixture.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Layout>(&bytes).ok());
        match layout {
            Some(layout) if owner_alive(&layout) => {}
            // A record that does not describe the directory it sits in is left alone: teardown
            // removes `base` recursively.
            Some(layout) if layout.base != base || !layout.is_plausible() => {}
            Some(layout) => {
                // The registry lock is held already, so the slot is released without retaking it.
                match teardown_locked(&Footprint::new(layout), None) {
                    Ok(()) => eprintln!(
                        "runtime fixture: reaped stale fixture {} (its owner is gone)",
                        base.display()
                    ),
                    Err(error) => {
                        errors.push(error.context(format!("stale fixture {}", base.display())));
                    }
                }
            }
            None if !base.exists() => {
                let _ = fs::remove_file(&slot_path);
            }
            None => {}
        }
    }
    errors
}

fn owner_alive(layout: &Layout) -> bool {
    pid_alive(layout.owner_pid) && process_start(layout.owner_pid) == Some(layout.owner_start)
}
