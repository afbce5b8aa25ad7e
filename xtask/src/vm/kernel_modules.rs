//! The kernel modules stage 1 loads: picked from `modules.dep` with their dependencies, in load
//! order, and decompressed for the initramfs.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Kernel modules stage 1 loads, with their parameters; their dependencies come from
/// `modules.dep` and are loaded first. Modules built into the kernel are skipped.
pub(super) const MODULES: [(&str, &str); 5] = [
    ("virtio_pci", ""),
    ("9pnet_virtio", ""),
    ("9p", ""),
    ("overlay", ""),
    // Without numdummies=0 the module creates dummy0 itself and `ip link add` would fail.
    ("dummy", "numdummies=0"),
];

#[derive(Debug)]
pub(super) struct KernelModule {
    /// With `-` made `_`, as the kernel names it.
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) params: &'static str,
}

/// Module name as the kernel reports it, from a `modules.dep` path (`kernel/fs/9p/9p.ko.xz` is `9p`).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Lists the modules in `wanted` and their dependencies (from `modules.dep`) in load order,
/// skipping modules built into the kernel (`modules.builtin`).
pub(super) fn resolve_modules(
    module_dir: &Path,
    wanted: &[(&str, &'static str)],
) -> Result<Vec<KernelModule>> {
    let dep_path = module_dir.join("modules.dep");
    let deps = fs::read_to_string(&dep_path)
        .with_context(|| format!("cannot read {}", dep_path.display()))?;
    let table: Vec<DepEntry<'_>> = deps
        .lines()
        .filter_map(|line| {
            let (module, rest) = line.split_once(':')?;
            Some((
                module_name(module),
                module,
                rest.split_whitespace().collect(),
            ))
        })
        .collect();
    let builtin = fs::read_to_string(module_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: HashSet<String> = builtin.lines().map(module_name).collect();

    let mut order = Vec::new();
    for (name, params) in wanted {
        if table.iter().any(|(n, _, _)| n == name) {
            add_module(&table, module_dir, name, params, &mut order, 0)?;
        } else if !builtin.contains(*name) {
            bail!(
                "kernel module {name} is neither in {} nor built in: the vm cannot boot without it",
                dep_path.display()
            );
        }
    }
    Ok(order)
}

/// One `modules.dep` line: module name, its path, its dependencies' paths.
type DepEntry<'a> = (String, &'a str, Vec<&'a str>);

/// Appends module `name` to `order` after its dependencies (depth-first), once.
fn add_module(
    table: &[DepEntry<'_>],
    module_dir: &Path,
    name: &str,
    params: &'static str,
    order: &mut Vec<KernelModule>,
    depth: usize,
) -> Result<()> {
    if order.iter().any(|m| m.name == name) {
        return Ok(());
    }
    if depth > 32 {
        bail!("kernel module dependencies of {name} loop in modules.dep");
    }
    let Some((_, path, deps)) = table.iter().find(|(n, _, _)| n == name) else {
        bail!("kernel module {name} is a dependency but not in modules.dep");
    };
    for dep in deps {
        add_module(table, module_dir, &module_name(dep), "", order, depth + 1)?;
    }
    order.push(KernelModule {
        name: name.to_owned(),
        path: module_dir.join(path),
        params,
    });
    Ok(())
}

/// A module's object code, decompressed when the kernel ships it compressed (busybox's insmod
/// cannot be relied on to decompress).
pub(super) fn module_bytes(module: &KernelModule) -> Result<Vec<u8>> {
    let path = &module.path;
    let tool = match path.extension().and_then(|ext| ext.to_str()) {
        Some("ko") => {
            return fs::read(path).with_context(|| format!("cannot read {}", path.display()));
        }
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => bail!("kernel module {} has an unknown file type", path.display()),
    };
    let output = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {tool} to decompress {}", path.display()))?;
    if !output.status.success() {
        bail!("{tool} -dc {} failed ({})", path.display(), output.status);
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(module_name("kernel/fs/9p/9p.ko"), "9p");
        assert_eq!(
            module_name("kernel/net/9p/9pnet_virtio.ko.xz"),
            "9pnet_virtio"
        );
        assert_eq!(module_name("kernel/drivers/x/foo-bar.ko.zst"), "foo_bar");
    }

    #[test]
    fn modules_load_after_their_dependencies() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("modules.dep"),
            "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n\
             kernel/net/9p/9pnet.ko.xz:\n\
             kernel/fs/netfs/netfs.ko.xz:\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("modules.builtin"),
            "kernel/fs/overlayfs/overlay.ko\n",
        )
        .unwrap();
        let order =
            resolve_modules(dir.path(), &[("9p", ""), ("overlay", ""), ("9pnet", "")]).unwrap();
        let names: Vec<&str> = order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["9pnet", "netfs", "9p"]);
        assert!(order[2].path.ends_with("kernel/fs/9p/9p.ko.xz"));
        let err = resolve_modules(dir.path(), &[("dummy", "")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("kernel module dummy"), "{err}");
    }
}
