//! The `kernlet` node agent binary.
#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    let probes = kernlet::ebpf::Probes::load()?;
    for program in probes.programs() {
        println!("{}: {:?}", program.name, program.status);
    }
    Ok(())
}
