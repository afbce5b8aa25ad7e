//! What a fixture's resources are called and where they live, all derived from its random id,
//! its base directory and its subnet slot. Serialised to `<base>/fixture.json` so that another
//! process can tear the fixture down after its owner died.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::NAMESPACE;

/// Number of `/24` slots in [`POD_RANGE`](super::POD_RANGE).
pub(super) const SLOTS: u32 = 512;
/// containerd 1.6 puts shim sockets here whatever its state directory is.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// Everything that names a fixture's resources.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Layout {
    pub(super) id: String,
    pub(super) base: PathBuf,
    pub(super) slot: u32,
    pub(super) owner_pid: u32,
    /// The owner's start time, so that a recycled pid does not count as the owner.
    pub(super) owner_start: u64,
}

impl Layout {
    /// A sane record: an 8-hex-digit id, an absolute base directory that is not `/`.
    pub(super) fn is_plausible(&self) -> bool {
        self.id.len() == 8
            && self.id.bytes().all(|b| b.is_ascii_hexdigit())
            && self.base.is_absolute()
            && self.base.parent().is_some()
            && self.slot < SLOTS
    }

    pub(super) fn root(&self) -> PathBuf {
        self.base.join("root")
    }
    pub(super) fn state(&self) -> PathBuf {
        self.base.join("state")
    }
    pub(super) fn socket(&self) -> PathBuf {
        self.base.join("containerd.sock")
    }
    pub(super) fn config(&self) -> PathBuf {
        self.base.join("config.toml")
    }
    pub(super) fn log(&self) -> PathBuf {
        self.base.join("containerd.log")
    }
    pub(super) fn record(&self) -> PathBuf {
        self.base.join("fixture.json")
    }
    pub(super) fn cni_conf_dir(&self) -> PathBuf {
        self.base.join("cni/net.d")
    }
    pub(super) fn cni_data_dir(&self) -> PathBuf {
        self.base.join("cni/networks")
    }
    pub(super) fn runc_root(&self) -> PathBuf {
        self.state().join("runc")
    }
    pub(super) fn netns_dir(&self) -> PathBuf {
        self.state().join("io.containerd.grpc.v1.cri/netns")
    }
    pub(super) fn bridge(&self) -> String {
        format!("kl{}", self.id)
    }
    pub(super) fn network(&self) -> String {
        format!("kernlet-{}", self.id)
    }
    pub(super) fn cgroup_parent(&self) -> String {
        format!("/kernlet-{}", self.id)
    }
    /// The slot's `/24` as its first three octets.
    pub(super) fn subnet_prefix(&self) -> [u8; 3] {
        slot_prefix(self.slot)
    }
    pub(super) fn subnet(&self) -> String {
        let [a, b, c] = self.subnet_prefix();
        format!("{a}.{b}.{c}.0/24")
    }

    /// Where containerd 1.6 puts the socket of the shim for task `id`:
    /// `/run/containerd/s/<hex sha256 of "<socket>/<namespace>/<id>">`.
    pub(super) fn shim_socket(&self, id: &str) -> PathBuf {
        let key = self.socket().join(NAMESPACE).join(id);
        let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
        Path::new(SHIM_SOCKET_DIR).join(format!("{digest:x}"))
    }
}

/// The first three octets of slot `slot`'s `/24`.
pub(super) fn slot_prefix(slot: u32) -> [u8; 3] {
    [198, 18 + (slot / 256) as u8, (slot % 256) as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cover_the_benchmarking_range() {
        assert_eq!(slot_prefix(0), [198, 18, 0]);
        assert_eq!(slot_prefix(255), [198, 18, 255]);
        assert_eq!(slot_prefix(256), [198, 19, 0]);
        assert_eq!(slot_prefix(SLOTS - 1), [198, 19, 255]);
    }

    #[test]
    fn shim_socket_matches_containerd() {
        let layout = Layout {
            id: "00000000".into(),
            base: "/run/containerd".into(),
            slot: 0,
            owner_pid: 0,
            owner_start: 0,
        };
        // `printf %s /run/containerd/containerd.sock/k8s.io/x | sha256sum`
        assert_eq!(
            layout.shim_socket("x"),
            Path::new(
                "/run/containerd/s/f4387a886804a7f6b2a0bdfb71552d9a9ebe98742a803b1b2ef60583547245f0"
            )
        );
    }
}
