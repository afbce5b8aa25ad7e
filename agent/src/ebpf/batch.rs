//! Reading a whole cgroup map in a few `BPF_MAP_LOOKUP_BATCH` calls (Linux 5.6, hash and per-CPU
//! hash maps) instead of two system calls per entry.
//!
//! aya 0.14 iterates a map with `BPF_MAP_GET_NEXT_KEY` then `BPF_MAP_LOOKUP_ELEM` for every key
//! and has no batch operations. With an entry per container, pod and pause-container cgroup in
//! each map, that was about 800 `bpf(2)` calls a second at 100 pods (strace of `cargo xtask bench
//! stats`), more than all the round's cgroupfs reads; now it is 8. Under the node VM's emulation a
//! system call is the expensive part. One call copies up to [`BATCH_BYTES`] of entries.
//!
//! This is the one module of the agent with `unsafe` code: the `bpf(2)` call (neither aya nor
//! nix wraps the batch command) and reading the kernel's values out of the byte buffer (the value
//! types are `aya::Pod`: plain `repr(C)` data for which every bit pattern is valid). Where the
//! kernel refuses the command (older than 5.6: `EINVAL`) the caller falls back to aya's iteration.
#![expect(
    unsafe_code,
    reason = "the bpf(2) batch command has no safe wrapper in aya or nix; see the module doc"
)]

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::Pod;

/// The buffer one call fills: keys and values of up to this many bytes (at most
/// [`MAX_COUNT`] entries).
const BATCH_BYTES: usize = 8 * 1024;
/// The most entries one call asks for; a hash bucket holding more than this makes the kernel
/// answer `ENOSPC`, which the caller treats like any refusal (falls back).
const MAX_COUNT: usize = 512;

/// `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h, `enum bpf_cmd`).
const BPF_MAP_LOOKUP_BATCH: nix::libc::c_long = 24;

/// The `batch` member of `union bpf_attr`; the kernel zero-fills the rest of the union.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Calls `each(key, value bytes)` for every entry of the hash map `fd` with `u64` keys and
/// values of `stride` bytes (a per-CPU map's stride is its value size rounded up to 8, times the
/// possible CPUs, as the kernel lays them out).
pub(super) fn for_each(
    fd: BorrowedFd<'_>,
    stride: usize,
    mut each: impl FnMut(u64, &[u8]),
) -> io::Result<()> {
    let count = (BATCH_BYTES / (size_of::<u64>() + stride)).clamp(1, MAX_COUNT);
    let mut keys = vec![0u64; count];
    let mut values = vec![0u8; count * stride];
    // The hash map's batch token is a bucket index (`u32`); sized for any map type.
    let mut token = [0u64; 1];
    let mut first = true;
    loop {
        let mut next = [0u64; 1];
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_mut_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(count).unwrap_or(u32::MAX),
            map_fd: u32::try_from(fd.as_raw_fd()).map_err(|_| io::ErrorKind::InvalidInput)?,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr` prefix for BPF_MAP_LOOKUP_BATCH whose pointers
        // name live buffers of `count` keys and `count * stride` value bytes and two 8-byte
        // tokens, all of which outlive the call; the kernel writes at most `count` entries.
        let result = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        // The kernel reports how many entries it copied, also with ENOENT (the map's end).
        let end = if result < 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(nix::libc::ENOENT) {
                return Err(error);
            }
            true
        } else {
            false
        };
        let copied = usize::try_from(attr.count).unwrap_or(0).min(count);
        for (i, key) in keys.iter().take(copied).enumerate() {
            each(*key, &values[i * stride..(i + 1) * stride]);
        }
        if end || copied == 0 {
            return Ok(());
        }
        token = next;
        first = false;
    }
}

/// The `V` at the start of `bytes`.
///
/// # Panics
/// If `bytes` is shorter than `V` (a caller's stride is never).
pub(super) fn value<V: Pod>(bytes: &[u8]) -> V {
    assert!(
        bytes.len() >= size_of::<V>(),
        "value bytes shorter than the value type"
    );
    // SAFETY: `bytes` holds at least `size_of::<V>()` bytes (checked above), read without
    // alignment; `V: Pod` is valid for any bit pattern.
    unsafe { bytes.as_ptr().cast::<V>().read_unaligned() }
}

/// Each CPU's `V` of a per-CPU value laid out as the kernel copies it (`round_up(size, 8)` apart).
pub(super) fn per_cpu<V: Pod>(bytes: &[u8]) -> impl Iterator<Item = V> + '_ {
    bytes.chunks_exact(per_cpu_size::<V>()).map(value::<V>)
}

/// One CPU's slot of a per-CPU value.
pub(super) fn per_cpu_size<V>() -> usize {
    size_of::<V>().next_multiple_of(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_values_are_eight_byte_slots() {
        #[derive(Clone, Copy, Debug, PartialEq)]
        #[repr(C)]
        struct Odd {
            a: u32,
            b: u16,
        }
        // SAFETY: plain integers, valid for any bit pattern.
        unsafe impl Pod for Odd {}
        assert_eq!(per_cpu_size::<Odd>(), 8);
        let mut bytes = vec![0u8; 16];
        bytes[0..4].copy_from_slice(&7u32.to_ne_bytes());
        bytes[4..6].copy_from_slice(&1u16.to_ne_bytes());
        bytes[8..12].copy_from_slice(&9u32.to_ne_bytes());
        let values: Vec<Odd> = per_cpu::<Odd>(&bytes).collect();
        assert_eq!(values, [Odd { a: 7, b: 1 }, Odd { a: 9, b: 0 }]);
    }
}
