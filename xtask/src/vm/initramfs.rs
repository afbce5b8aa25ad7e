//! The VM's initramfs: busybox, the kernel modules, the stage 1 script (`/init`) that builds the
//! root overlay, and the stage 2 script that runs the command on it and prints the exit marker.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::cpio::CpioWriter;
use super::host::HostParts;
use super::kernel_modules::{KernelModule, module_bytes};
use crate::cmd::shell_quote;

/// Where the stage 2 script and the command live inside the VM's root.
const GUEST_DIR: &str = "/.kernlet-vm";
/// `PATH` inside the VM.
const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Stage 1, `/init` in the initramfs (busybox sh): modules, network, the root overlay, the VM's
/// own filesystems, every cgroup controller, then `switch_root` into stage 2.
fn stage1_script(modules: &[KernelModule]) -> String {
    let mut insmods = String::new();
    for module in modules {
        let params = if module.params.is_empty() {
            String::new()
        } else {
            format!(" {}", module.params)
        };
        let _ = writeln!(
            insmods,
            "insmod /lib/modules/{name}.ko{params} || die \"insmod {name} failed\"",
            name = module.name
        );
    }
    format!(
        r#"#!/bin/busybox sh
# kernlet node VM, stage 1 (PID 1 in the initramfs).
/bin/busybox mkdir -p /proc /sys /dev /host /newroot /up
/bin/busybox --install -s /bin
export PATH=/bin
die() {{ echo "kernlet-vm: $*" >&2; sleep 1; poweroff -f; sleep 30; }}
mount -t proc proc /proc || die "mounting /proc failed"
mount -t sysfs sysfs /sys || die "mounting /sys failed"
mount -t devtmpfs devtmpfs /dev || die "mounting /dev failed"
{insmods}ip link set lo up || die "bringing lo up failed"
ip link add dummy0 type dummy || die "creating dummy0 failed"
ip addr add 192.0.2.10/24 dev dummy0 || die "addressing dummy0 failed"
ip link set dummy0 up || die "bringing dummy0 up failed"
ip route add default via 192.0.2.1 dev dummy0 || die "adding the default route failed"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 host /host || die "mounting the host's root over 9p failed"
mount -t tmpfs -o mode=0755 tmpfs /up && mkdir -p /up/upper /up/work || die "mounting the overlay's tmpfs failed"
mount -t overlay -o lowerdir=/host,upperdir=/up/upper,workdir=/up/work overlay /newroot || die "mounting the root overlay failed"
mkdir -p /newroot{GUEST_DIR} && cp /vm/run /vm/cmd /newroot{GUEST_DIR}/ || die "copying the command failed"
for d in proc sys dev; do mount --move /$d /newroot/$d || die "moving /$d failed"; done
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts || die "mounting /dev/pts failed"
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm || die "mounting /dev/shm failed"
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup || die "mounting cgroup2 failed"
mount -t bpf bpf /newroot/sys/fs/bpf || die "mounting bpffs failed"
mount -t tracefs tracefs /newroot/sys/kernel/tracing || die "mounting tracefs failed"
mount -t tmpfs -o mode=0755 tmpfs /newroot/run || die "mounting /run failed"
# Container state: overlayfs cannot use the root overlay as an upper layer.
mkdir -p /newroot/var/lib/vm && mount -t tmpfs -o mode=0755 tmpfs /newroot/var/lib/vm || die "mounting /var/lib/vm failed"
for c in $(cat /newroot/sys/fs/cgroup/cgroup.controllers); do
  echo "+$c" > /newroot/sys/fs/cgroup/cgroup.subtree_control || die "enabling the $c cgroup controller failed"
done
exec switch_root /newroot /bin/sh {GUEST_DIR}/run
die "switch_root failed"
"#
    )
}

/// Stage 2, PID 1 on the overlay root (the host's `/bin/sh`): environment, working directory,
/// the command, its exit marker, power-off.
pub(super) fn stage2_script(env: &[(String, String)], cwd: &Path, nonce: &str) -> Result<String> {
    let Some(cwd) = cwd.to_str() else {
        bail!("the working directory {} is not utf-8", cwd.display());
    };
    let mut exports = String::new();
    for (name, value) in [("PATH", GUEST_PATH), ("HOME", "/root")]
        .into_iter()
        .chain(env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    {
        let _ = writeln!(exports, "export {name}={}", shell_quote(value));
    }
    let cwd = shell_quote(cwd);
    // The marker is printed through a format string, so this script's text never holds it whole:
    // a command that prints the script cannot fake the status.
    Ok(format!(
        r#"#!/bin/sh
# kernlet node VM, stage 2 (PID 1 on the overlay root).
{exports}cd {cwd} || {{ echo "kernlet-vm: cannot enter "{cwd} >&2; sleep 1; echo o > /proc/sysrq-trigger; sleep 30; }}
/bin/sh {GUEST_DIR}/cmd < /dev/null
status=$?
printf '\n__KERNLET_VM_EXIT_%s__=%s\n' {nonce} "$status"
# The host stops qemu once it has read the marker; powering off is the fallback, late enough
# for the marker to leave the serial port first.
sleep 5
echo o > /proc/sysrq-trigger
sleep 30
"#
    ))
}

/// Writes the initramfs: busybox, the modules, both stages and the command.
pub(super) fn write_initramfs(
    path: &Path,
    host: &HostParts,
    stage2: &str,
    command: &str,
) -> Result<()> {
    let file =
        fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));
    let busybox = fs::read(&host.busybox)
        .with_context(|| format!("cannot read {}", host.busybox.display()))?;
    let write = |cpio: &mut CpioWriter<_>| -> Result<()> {
        for dir in ["bin", "dev", "lib", "lib/modules", "vm"] {
            cpio.dir(dir)?;
        }
        // The kernel opens /dev/console for init's stdio before anything is mounted.
        cpio.char_device("dev/console", 0o600, 5, 1)?;
        cpio.file("bin/busybox", 0o755, &busybox)?;
        for module in &host.modules {
            let bytes = module_bytes(module)?;
            cpio.file(&format!("lib/modules/{}.ko", module.name), 0o644, &bytes)?;
        }
        cpio.file("init", 0o755, stage1_script(&host.modules).as_bytes())?;
        cpio.file("vm/run", 0o755, stage2.as_bytes())?;
        let mut command = command.to_owned();
        command.push('\n');
        cpio.file("vm/cmd", 0o644, command.as_bytes())?;
        Ok(())
    };
    write(&mut cpio)?;
    cpio.finish()
        .and_then(|mut out| out.flush())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::qemu::marker_prefix;

    #[test]
    fn stage2_quotes_what_it_forwards() {
        let env = vec![("KERNLET_X".to_owned(), "a'b $c\nd".to_owned())];
        let script = stage2_script(&env, Path::new("/work/my dir"), "00ff").unwrap();
        assert!(script.contains("export KERNLET_X='a'\\''b $c\nd'\n"));
        assert!(script.contains("cd '/work/my dir' ||"));
        assert!(!script.contains(&marker_prefix("00ff")));
    }
}
