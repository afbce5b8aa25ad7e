//! What kernlet knows of its own node: addresses, memory and CPU capacity, read from procfs with
//! the proc root as a parameter (tests use a temp dir).
//!
//! The node IP follows upstream's fallback when `--node-ip` is not given: the address of the
//! interface holding the default route (upstream's `ChooseHostInterface`).
use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use crate::resources::Amounts;

/// Node capacity as the kubelet reports it (`machineInfo`): `MemTotal` from `<proc>/meminfo` and
/// the online CPUs; the rest is left to the caller.
#[must_use]
pub fn capacity(proc_root: &Path) -> Amounts {
    let memory_kib = fs::read_to_string(proc_root.join("meminfo"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix("MemTotal:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .unwrap_or(0);
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    Amounts {
        cpu_millis: Some(i64::try_from(cpus).unwrap_or(1) * 1000),
        memory_bytes: Some(i64::try_from(memory_kib * 1024).unwrap_or(i64::MAX)),
        ..Amounts::default()
    }
}

/// The node's IPs: `configured` when given, else the IPv4 address of the default route's
/// interface, else loopback.
#[must_use]
pub fn host_ips(configured: &[IpAddr], proc_root: &Path) -> Vec<IpAddr> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    default_route_interface(proc_root)
        .and_then(|interface| interface_ipv4(&interface))
        .map_or_else(
            || vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            |ip| vec![IpAddr::V4(ip)],
        )
}

/// Whether `mount` is a cgroup v2 (unified) filesystem, as upstream's `IsCgroup2UnifiedMode`
/// decides with `statfs`.
#[must_use]
pub fn cgroup_unified(mount: &Path) -> bool {
    nix::sys::statfs::statfs(mount)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// The interface of the IPv4 default route in `<proc>/net/route`.
fn default_route_interface(proc_root: &Path) -> Option<String> {
    let table = fs::read_to_string(proc_root.join("net/route")).ok()?;
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let interface = fields.next()?;
        let destination = fields.next()?;
        (destination == "00000000").then(|| interface.to_owned())
    })
}

fn interface_ipv4(interface: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|entry| {
        if entry.interface_name != interface {
            return None;
        }
        let address = entry.address?;
        address
            .as_sockaddr_in()
            .map(nix::sys::socket::SockaddrIn::ip)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_reads_meminfo() {
        let proc = tempfile::tempdir().unwrap();
        fs::write(
            proc.path().join("meminfo"),
            "MemTotal:       24576000 kB\nMemFree: 1 kB\n",
        )
        .unwrap();
        assert_eq!(capacity(proc.path()).memory_bytes, Some(24_576_000 * 1024));
    }

    #[test]
    fn default_route_interface_from_the_route_table() {
        let proc = tempfile::tempdir().unwrap();
        fs::create_dir(proc.path().join("net")).unwrap();
        fs::write(
            proc.path().join("net/route"),
            "Iface\tDestination\tGateway\tFlags\n\
             kl1\t0012C6\t00000000\t0001\n\
             eth0\t00000000\t0100A8C0\t0003\n",
        )
        .unwrap();
        assert_eq!(
            default_route_interface(proc.path()).as_deref(),
            Some("eth0")
        );
    }

    #[test]
    fn configured_ips_win() {
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        assert_eq!(host_ips(&[ip], Path::new("/nonexistent")), [ip]);
        assert_eq!(
            host_ips(&[], Path::new("/nonexistent")),
            [IpAddr::V4(Ipv4Addr::LOCALHOST)]
        );
    }
}
