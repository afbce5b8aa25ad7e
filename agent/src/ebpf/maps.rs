//! Reading the per-cgroup maps into [`EbpfCounters`] and pruning dead cgroup ids from them.
//!
//! The Rust programs' maps are per-CPU hash maps (updated without atomics on hot paths) and are
//! summed here; the C programs' maps are shared hash maps updated with atomic adds.
use std::{
    collections::{HashMap, HashSet},
    io,
    mem::size_of,
    os::fd::AsFd,
};

use aya::{
    Pod,
    maps::{HashMap as BpfHashMap, Map, MapData, MapError, PerCpuHashMap},
};
use kernlet_ebpf_common::{
    BLOCK_MAP, BlockCounters, CPU_MAP, CpuCounters, FAULT_MAP, HISTOGRAM_BUCKETS, Histogram,
    NET_MAP, NetCounters, OOM_MAP, OomCounters, RUNQ_MAP,
};

use super::counters::{self, EbpfCounters, LatencyHistogram, OomVictim};
use super::{EbpfError, Probes, batch, load::Object};

const _: () = assert!(HISTOGRAM_BUCKETS == counters::HISTOGRAM_BUCKETS);

/// A map keyed by cgroup id: its object, the programs that must be loaded for it to count, and
/// its key listing and removal (aya checks the value size, so these are typed).
struct CgroupMap {
    name: &'static str,
    object: Object,
    programs: &'static [&'static str],
    keys: fn(&Map) -> Result<Vec<u64>, MapError>,
    remove: fn(&mut Map, u64) -> Result<(), MapError>,
}

const CGROUP_MAPS: [CgroupMap; 6] = [
    CgroupMap {
        name: CPU_MAP,
        object: Object::Rust,
        programs: &["sched_switch"],
        keys: per_cpu_keys::<CpuCounters>,
        remove: per_cpu_remove::<CpuCounters>,
    },
    CgroupMap {
        name: NET_MAP,
        object: Object::Rust,
        programs: &["skb_ingress", "skb_egress"],
        keys: per_cpu_keys::<NetCounters>,
        remove: per_cpu_remove::<NetCounters>,
    },
    CgroupMap {
        name: FAULT_MAP,
        object: Object::Rust,
        programs: &["page_fault_user"],
        keys: per_cpu_keys::<u64>,
        remove: per_cpu_remove::<u64>,
    },
    CgroupMap {
        name: RUNQ_MAP,
        object: Object::Runqlat,
        programs: &["runq_wakeup", "runq_switch"],
        keys: shared_keys::<Histogram>,
        remove: shared_remove::<Histogram>,
    },
    CgroupMap {
        name: BLOCK_MAP,
        object: Object::Block,
        programs: &["block_issue", "block_complete"],
        keys: shared_keys::<BlockCounters>,
        remove: shared_remove::<BlockCounters>,
    },
    CgroupMap {
        name: OOM_MAP,
        object: Object::Oom,
        programs: &["oom_kill"],
        keys: shared_keys::<OomCounters>,
        remove: shared_remove::<OomCounters>,
    },
];

fn per_cpu_keys<V: Pod>(map: &Map) -> Result<Vec<u64>, MapError> {
    PerCpuHashMap::<&MapData, u64, V>::try_from(map)?
        .keys()
        .collect()
}

fn per_cpu_remove<V: Pod>(map: &mut Map, cgroup: u64) -> Result<(), MapError> {
    PerCpuHashMap::<&mut MapData, u64, V>::try_from(map)?.remove(&cgroup)
}

fn shared_keys<V: Pod>(map: &Map) -> Result<Vec<u64>, MapError> {
    BpfHashMap::<&MapData, u64, V>::try_from(map)?
        .keys()
        .collect()
}

fn shared_remove<V: Pod>(map: &mut Map, cgroup: u64) -> Result<(), MapError> {
    BpfHashMap::<&mut MapData, u64, V>::try_from(map)?.remove(&cgroup)
}

/// How the maps are read: [`batch`] calls where the kernel has them, or entry by entry (the
/// fallback, and the reference the kernel tests compare the batches with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    Batched,
    EntryByEntry,
}

pub(super) fn counters(
    probes: &Probes,
    how: Reading,
) -> Result<HashMap<u64, EbpfCounters>, EbpfError> {
    let cpu = read_per_cpu::<CpuCounters>(probes, CPU_MAP, CpuCounters::merged, how)?;
    let net = read_per_cpu::<NetCounters>(probes, NET_MAP, NetCounters::merged, how)?;
    let faults = read_per_cpu::<u64>(probes, FAULT_MAP, u64::wrapping_add, how)?;
    let runq = read_shared::<Histogram>(probes, RUNQ_MAP, how)?;
    let block = read_shared::<BlockCounters>(probes, BLOCK_MAP, how)?;
    let oom = read_shared::<OomCounters>(probes, OOM_MAP, how)?;

    let mut ids = HashSet::new();
    ids.extend(keys(cpu.as_ref()));
    ids.extend(keys(net.as_ref()));
    ids.extend(keys(faults.as_ref()));
    ids.extend(keys(runq.as_ref()));
    ids.extend(keys(block.as_ref()));
    ids.extend(keys(oom.as_ref()));
    let mut all = HashMap::with_capacity(ids.len());
    for id in ids {
        all.entry(id).or_insert_with(|| EbpfCounters {
            on_cpu_ns: cpu.as_ref().map(|m| get(m, id).on_cpu_ns),
            switches: cpu.as_ref().map(|m| get(m, id).switches),
            runq_latency: runq.as_ref().map(|m| latency(&get(m, id))),
            net: net.as_ref().map(|m| {
                let n = get(m, id);
                counters::NetCounters {
                    rx_bytes: n.rx_bytes,
                    rx_packets: n.rx_packets,
                    tx_bytes: n.tx_bytes,
                    tx_packets: n.tx_packets,
                }
            }),
            block: block.as_ref().map(|m| {
                let b = get(m, id);
                counters::BlockCounters {
                    read_bytes: b.read_bytes,
                    write_bytes: b.write_bytes,
                    reads: b.reads,
                    writes: b.writes,
                    latency: latency(&b.latency),
                }
            }),
            oom_kills: oom.as_ref().map(|m| get(m, id).kills),
            last_oom_victim: oom
                .as_ref()
                .and_then(|m| m.get(&id))
                .filter(|o| o.kills > 0)
                .map(victim),
            page_faults: faults.as_ref().map(|m| get(m, id)),
            // No program tells major faults apart yet (page_fault_user does not).
            major_page_faults: None,
        });
    }
    Ok(all)
}

pub(super) fn forget(probes: &mut Probes, cgroups: &[u64]) -> Result<(), EbpfError> {
    for CgroupMap {
        name,
        object,
        remove,
        ..
    } in CGROUP_MAPS
    {
        let Some(map) = probes.object_mut(object).and_then(|o| o.map_mut(name)) else {
            continue;
        };
        for &cgroup in cgroups {
            match remove(map, cgroup) {
                Err(MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(EbpfError::Remove {
                        name,
                        cgroup,
                        source,
                    });
                }
                Ok(()) => {}
            }
        }
    }
    Ok(())
}

pub(super) fn retain(
    probes: &mut Probes,
    mut keep: impl FnMut(u64) -> bool,
) -> Result<usize, EbpfError> {
    let mut dead = Vec::new();
    for CgroupMap {
        name, object, keys, ..
    } in CGROUP_MAPS
    {
        let Some(map) = probes.object(object).and_then(|o| o.map(name)) else {
            continue;
        };
        let keys = keys(map).map_err(|source| EbpfError::Map { name, source })?;
        dead.extend(keys.into_iter().filter(|id| !keep(*id)));
    }
    dead.sort_unstable();
    dead.dedup();
    forget(probes, &dead)?;
    Ok(dead.len())
}

/// The map's entries if every program feeding it is loaded, else `None`.
fn required<'a>(probes: &'a Probes, name: &'static str) -> Result<Option<&'a Map>, EbpfError> {
    let Some(entry) = CGROUP_MAPS.iter().find(|m| m.name == name) else {
        return Ok(None);
    };
    if !entry.programs.iter().all(|p| probes.loaded(p)) {
        return Ok(None);
    }
    probes
        .object(entry.object)
        .and_then(|o| o.map(name))
        .map(Some)
        .ok_or(EbpfError::MissingMap { name })
}

fn read_per_cpu<V: Pod + Default>(
    probes: &Probes,
    name: &'static str,
    merge: fn(V, V) -> V,
    how: Reading,
) -> Result<Option<HashMap<u64, V>>, EbpfError> {
    let Some(raw) = required(probes, name)? else {
        return Ok(None);
    };
    let map_error = |source| EbpfError::Map { name, source };
    let map = PerCpuHashMap::<&MapData, u64, V>::try_from(raw).map_err(map_error)?;
    if let (Reading::Batched, Some(cpus), Map::PerCpuHashMap(data)) =
        (how, probes.possible_cpus(), raw)
    {
        let mut totals = HashMap::new();
        let stride = batch::per_cpu_size::<V>() * cpus;
        let read = batch::for_each(data.fd().as_fd(), stride, |cgroup, bytes| {
            let total = batch::per_cpu::<V>(bytes).fold(V::default(), merge);
            totals.insert(cgroup, total);
        });
        match read {
            Ok(()) => return Ok(Some(totals)),
            Err(error) => batch_refused(name, &error),
        }
    }
    let mut totals = HashMap::new();
    for entry in &map {
        let (cgroup, per_cpu) = entry.map_err(map_error)?;
        totals.insert(
            cgroup,
            per_cpu.iter().fold(V::default(), |acc, v| merge(acc, *v)),
        );
    }
    Ok(Some(totals))
}

fn read_shared<V: Pod>(
    probes: &Probes,
    name: &'static str,
    how: Reading,
) -> Result<Option<HashMap<u64, V>>, EbpfError> {
    let Some(raw) = required(probes, name)? else {
        return Ok(None);
    };
    let map_error = |source| EbpfError::Map { name, source };
    let map = BpfHashMap::<&MapData, u64, V>::try_from(raw).map_err(map_error)?;
    let mut all = HashMap::new();
    let read = match (how, raw) {
        (Reading::Batched, Map::HashMap(data)) => {
            batch::for_each(data.fd().as_fd(), size_of::<V>(), |cgroup, bytes| {
                all.insert(cgroup, batch::value::<V>(bytes));
            })
        }
        _ => Err(io::ErrorKind::Unsupported.into()),
    };
    match read {
        Ok(()) => Ok(Some(all)),
        Err(error) => {
            if how == Reading::Batched {
                batch_refused(name, &error);
            }
            map.iter()
                .collect::<Result<HashMap<_, _>, _>>()
                .map(Some)
                .map_err(map_error)
        }
    }
}

/// A kernel without batch lookups (before 5.6) or a bucket too full for one batch: the map is
/// read entry by entry instead.
fn batch_refused(name: &str, error: &io::Error) {
    tracing::debug!(map = name, %error, "batch lookup refused; reading entry by entry");
}

fn keys<V>(map: Option<&HashMap<u64, V>>) -> impl Iterator<Item = u64> + '_ {
    map.into_iter().flat_map(HashMap::keys).copied()
}

fn get<V: Copy + Default>(map: &HashMap<u64, V>, id: u64) -> V {
    map.get(&id).copied().unwrap_or_default()
}

fn latency(histogram: &Histogram) -> LatencyHistogram {
    LatencyHistogram {
        buckets: histogram.buckets,
        sum_ns: histogram.sum_ns,
    }
}

fn victim(oom: &OomCounters) -> OomVictim {
    let len = oom
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(oom.comm.len());
    OomVictim {
        pid: oom.pid,
        comm: String::from_utf8_lossy(&oom.comm[..len]).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cgroup_map_is_in_its_object_with_the_shared_size() {
        for map in &CGROUP_MAPS {
            let parsed = aya_obj::Object::parse(map.object.bytes());
            let Ok(parsed) = parsed else {
                panic!("{} does not parse: {:?}", map.object, parsed.err());
            };
            let Some(declared) = parsed.maps.get(map.name) else {
                panic!("{} is missing from {}", map.name, map.object);
            };
            // C and Rust maps take their size from kernlet-ebpf-common (agent/build.rs passes it to
            // clang); a prebuilt KERNLET_EBPF_OBJECT could still disagree.
            assert_eq!(
                declared.max_entries(),
                kernlet_ebpf_common::CGROUP_ENTRIES,
                "{} in {} has the wrong number of entries",
                map.name,
                map.object
            );
        }
    }

    #[test]
    fn victim_comm_stops_at_the_first_nul() {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"stress");
        let oom = OomCounters {
            kills: 1,
            pid: 42,
            comm,
            ..OomCounters::default()
        };
        assert_eq!(
            victim(&oom),
            OomVictim {
                pid: 42,
                comm: "stress".into()
            }
        );
        let full = OomCounters {
            comm: *b"0123456789abcdef",
            ..oom
        };
        assert_eq!(victim(&full).comm, "0123456789abcdef");
    }

    #[test]
    fn histograms_keep_buckets_and_sum() {
        let mut histogram = Histogram::default();
        histogram.buckets[3] = 2;
        histogram.buckets[31] = 1;
        histogram.sum_ns = 20;
        let converted = latency(&histogram);
        assert_eq!(converted.count(), 3);
        assert_eq!(converted.sum_ns, 20);
    }
}
