//! The node VM (`cargo xtask vm`): the inner command's exit status comes back out, and inside it
//! cgroup v2 has every controller kernlet needs, writable from a fresh cgroup. Each test boots
//! one VM (a few seconds under TCG), so the checks of one VM share one boot.
use anyhow::{Context, Result};
use xtask::vm::{self, VmOptions};

/// Marks the lines the checks print on failure, so the assertion can quote them.
const FAILED: &str = "vm-check failed:";

#[test]
#[ignore = "vm: boots the node VM; run by cargo xtask test"]
fn vm_exit_status_propagates() -> Result<()> {
    let status = vm::run(&VmOptions::default(), "echo leaving with 7; exit 7")?;
    assert_eq!(status, 7, "`exit 7` inside the vm");
    Ok(())
}

#[test]
#[ignore = "vm: boots the node VM; run by cargo xtask test"]
fn vm_cgroup_v2_has_every_controller_and_a_writable_memory_max() -> Result<()> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let cwd = cwd.to_str().context("the current directory is not utf-8")?;
    // A value that only survives correct quoting.
    let tricky = "it's $HOME \"quoted\"";
    let opts = VmOptions {
        env: vec![("KERNLET_VM_TEST_VALUE".to_owned(), tricky.to_owned())],
        ..VmOptions::default()
    };
    let script = format!(
        r#"
fail() {{ echo "{FAILED} $1"; exit "$2"; }}
root=/sys/fs/cgroup
controllers=$(cat $root/cgroup.controllers) || fail "cannot read cgroup.controllers" 10
enabled=$(cat $root/cgroup.subtree_control) || fail "cannot read cgroup.subtree_control" 11
for c in memory cpu pids io; do
  case " $controllers " in *" $c "*) ;; *) fail "$c missing from cgroup.controllers: $controllers" 12;; esac
  case " $enabled " in *" $c "*) ;; *) fail "$c not in cgroup.subtree_control: $enabled" 13;; esac
done
mkdir $root/kernlet-vm-test || fail "cannot create $root/kernlet-vm-test" 14
echo 67108864 > $root/kernlet-vm-test/memory.max || fail "cannot write memory.max" 15
max=$(cat $root/kernlet-vm-test/memory.max)
[ "$max" = 67108864 ] || fail "memory.max reads back as '$max', not 67108864" 16
rmdir $root/kernlet-vm-test || fail "cannot remove $root/kernlet-vm-test" 17
[ "$KERNLET_IN_VM" = 1 ] || fail "KERNLET_IN_VM is '$KERNLET_IN_VM', not 1" 18
[ "$KERNLET_VM_TEST_VALUE" = {tricky} ] || fail "KERNLET_VM_TEST_VALUE arrived as [$KERNLET_VM_TEST_VALUE]" 19
[ "$(pwd)" = {cwd} ] || fail "started in $(pwd), not the host's current directory" 20
ip route show default | grep -q 'via 192.0.2.1 dev dummy0' || fail "no default route via dummy0: $(ip route)" 21
echo "vm-check: memory.max $max; controllers $controllers"
exit 0
"#,
        tricky = xtask::cmd::shell_quote(tricky),
        cwd = xtask::cmd::shell_quote(cwd),
    );
    let run = vm::run_capture(&opts, &script)?;
    let failures: Vec<&str> = run
        .console
        .lines()
        .filter(|line| line.contains(FAILED))
        .collect();
    assert_eq!(
        run.status, 0,
        "checks inside the vm failed (status {}): {failures:?}",
        run.status
    );
    assert!(
        run.console.contains("vm-check: memory.max 67108864;"),
        "the vm's console lacks the checks' summary line"
    );
    Ok(())
}
