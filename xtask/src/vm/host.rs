//! What the VM needs from the host: a Debian kernel (not the running one) with its modules,
//! qemu, and a static busybox for the initramfs.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::kernel_modules::{KernelModule, MODULES, resolve_modules};

/// The Debian package that ships the VM's kernel.
const KERNEL_PACKAGE: &str = "linux-image-amd64";
/// Static busybox: the initramfs has no libraries.
const BUSYBOX: &str = "/bin/busybox";
const QEMU: &str = "qemu-system-x86_64";

/// What the VM needs from the host.
#[derive(Debug)]
pub(super) struct HostParts {
    pub(super) kernel: PathBuf,
    pub(super) qemu: PathBuf,
    pub(super) busybox: PathBuf,
    /// In load order.
    pub(super) modules: Vec<KernelModule>,
}
impl HostParts {
    pub(super) fn find() -> Result<Self> {
        let running = fs::read_to_string("/proc/sys/kernel/osrelease")
            .context("cannot read the running kernel's release")?;
        let (version, kernel) = find_kernel(
            Path::new("/lib/modules"),
            Path::new("/boot"),
            running.trim(),
        )?;
        let modules = resolve_modules(&Path::new("/lib/modules").join(&version), &MODULES)?;
        let qemu = find_in_path(QEMU).with_context(|| {
            format!(
                "{QEMU} not found in PATH: install the qemu-system-x86 package (cargo xtask setup)"
            )
        })?;
        let busybox = PathBuf::from(BUSYBOX);
        if !busybox.is_file() {
            bail!("{BUSYBOX} not found: install the busybox-static package (cargo xtask setup)");
        }
        if elf_has_interpreter(&busybox)? {
            bail!(
                "{BUSYBOX} is dynamically linked (the busybox package) and cannot run in the vm's \
                 initramfs: install the busybox-static package (cargo xtask setup)"
            );
        }
        Ok(Self {
            kernel,
            qemu,
            busybox,
            modules,
        })
    }
}

/// Picks the newest kernel that has both `/boot/vmlinuz-<version>` and
/// `/lib/modules/<version>/modules.dep`, preferring one that is not the running kernel (the host's
/// own kernel usually ships no modules there).
fn find_kernel(modules_root: &Path, boot: &Path, running: &str) -> Result<(String, PathBuf)> {
    let mut versions: Vec<String> = match fs::read_dir(modules_root) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|version| {
                boot.join(format!("vmlinuz-{version}")).is_file()
                    && modules_root.join(version).join("modules.dep").is_file()
            })
            .collect(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            return Err(err).with_context(|| format!("cannot list {}", modules_root.display()));
        }
    };
    versions.sort_by(|a, b| version_cmp(a, b));
    let chosen = versions
        .iter()
        .rev()
        .find(|version| *version != running)
        .or_else(|| versions.last());
    match chosen {
        Some(version) => {
            let kernel = boot.join(format!("vmlinuz-{version}"));
            Ok((version.clone(), kernel))
        }
        None => bail!(
            "no kernel for the vm: found no {}/vmlinuz-<version> with {}/<version>/modules.dep \
             (the running kernel is {running}); install the {KERNEL_PACKAGE} package (cargo xtask setup)",
            boot.display(),
            modules_root.display()
        ),
    }
}

/// Compares version strings as `sort -V` roughly does: runs of digits numerically, the rest
/// byte-wise.
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, sa), (db, sb)) in ca.iter().zip(&cb) {
        let order = if *da && *db {
            let (ta, tb) = (sa.trim_start_matches('0'), sb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            sa.cmp(sb)
        };
        if order.is_ne() {
            return order;
        }
    }
    ca.len().cmp(&cb.len())
}
fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// Whether the 64-bit little-endian ELF file at `path` asks for a program interpreter (is
/// dynamically linked).
fn elf_has_interpreter(path: &Path) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let field = |at: usize, len: usize| -> Option<u64> {
        let bytes = data.get(at..at + len)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    };
    let header_ok =
        data.starts_with(b"\x7fELF") && data.get(4) == Some(&2) && data.get(5) == Some(&1);
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (field(0x20, 8), field(0x36, 2), field(0x38, 2))
    else {
        bail!("{} is not a 64-bit ELF executable", path.display());
    };
    if !header_ok {
        bail!(
            "{} is not a 64-bit little-endian ELF executable",
            path.display()
        );
    }
    for i in 0..phnum {
        let at = usize::try_from(phoff + i * phentsize)?;
        match field(at, 4) {
            Some(kind) if kind == u64::from(PT_INTERP) => return Ok(true),
            Some(_) => {}
            None => bail!(
                "{} has a truncated ELF program header table",
                path.display()
            ),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        use std::cmp::Ordering::Less;
        assert_eq!(version_cmp("6.1.0-9-amd64", "6.1.0-56-amd64"), Less);
        assert_eq!(version_cmp("5.10.0-30-amd64", "6.1.0-1-amd64"), Less);
        assert_eq!(version_cmp("6.1", "6.1.0"), Less);
    }

    #[test]
    fn the_kernel_is_the_newest_one_that_is_not_running() {
        let root = tempfile::tempdir().unwrap();
        let (modules, boot) = (root.path().join("modules"), root.path().join("boot"));
        let err = find_kernel(&modules, &boot, "6.18.0")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux-image-amd64") && err.contains("cargo xtask setup"),
            "{err}"
        );
        for version in [
            "6.1.0-9-amd64",
            "6.1.0-56-amd64",
            "6.18.0",
            "7.0.0-no-vmlinuz",
        ] {
            fs::create_dir_all(modules.join(version)).unwrap();
            fs::write(modules.join(version).join("modules.dep"), "").unwrap();
        }
        fs::create_dir_all(&boot).unwrap();
        for version in ["6.1.0-9-amd64", "6.1.0-56-amd64", "6.18.0"] {
            fs::write(boot.join(format!("vmlinuz-{version}")), "").unwrap();
        }
        let (version, kernel) = find_kernel(&modules, &boot, "6.18.0").unwrap();
        assert_eq!(version, "6.1.0-56-amd64");
        assert_eq!(kernel, boot.join("vmlinuz-6.1.0-56-amd64"));
        // Any kernel but the running one, newer or older.
        let (version, _) = find_kernel(&modules, &boot, "6.1.0-56-amd64").unwrap();
        assert_eq!(version, "6.18.0");
    }
}
