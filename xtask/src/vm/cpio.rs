//! A minimal writer of newc ("070701") cpio archives, the format the kernel unpacks as an
//! initramfs.

use std::fmt::Write as _;
use std::io::{self, Write};

use anyhow::{Context, Result};

/// Writes a newc ("070701") cpio archive, the format the kernel unpacks as an initramfs.
pub(super) struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    const S_IFDIR: u32 = 0o040_000;
    const S_IFREG: u32 = 0o100_000;
    const S_IFCHR: u32 = 0o020_000;

    pub(super) fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    pub(super) fn dir(&mut self, name: &str) -> Result<()> {
        self.entry(name, Self::S_IFDIR | 0o755, 2, (0, 0), &[])
    }

    pub(super) fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.entry(name, Self::S_IFREG | perm, 1, (0, 0), data)
    }

    pub(super) fn char_device(
        &mut self,
        name: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        self.entry(name, Self::S_IFCHR | perm, 1, (major, minor), &[])
    }

    /// Ends the archive with its trailer and hands back the writer.
    pub(super) fn finish(mut self) -> io::Result<W> {
        self.raw_entry(0, "TRAILER!!!", 0, 1, (0, 0), &[])?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.raw_entry(ino, name, mode, nlink, rdev, data)
            .with_context(|| format!("cannot add {name} to the initramfs"))
    }

    fn raw_entry(
        &mut self,
        ino: u32,
        name: &str,
        mode: u32,
        nlink: u32,
        (rdev_major, rdev_minor): (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let too_big = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} too large for cpio"),
            )
        };
        let size = u32::try_from(data.len()).map_err(|_| too_big("file"))?;
        let name_size = u32::try_from(name.len() + 1).map_err(|_| too_big("name"))?;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev_major, rdev_minor, name_size, 0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for field in fields {
            let _ = write!(header, "{field:08X}");
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Pads with NULs to a multiple of 4 bytes.
    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - self.written % 4) % 4;
        self.put(&[0u8; 3][..pad as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_end_with_the_trailer() {
        let mut cpio = CpioWriter::new(Vec::new());
        cpio.dir("bin").unwrap();
        cpio.file("bin/x", 0o755, b"hello").unwrap();
        let out = cpio.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        let header = std::str::from_utf8(&out[..110]).unwrap();
        // namesize of "bin" with its NUL.
        assert_eq!(&header[6 + 11 * 8..6 + 12 * 8], "00000004");
        // 110 + 4 = 114, padded to 116.
        assert!(out[116..].starts_with(b"070701"));
        let file_header = std::str::from_utf8(&out[116..226]).unwrap();
        assert_eq!(&file_header[6 + 6 * 8..6 + 7 * 8], "00000005");
        assert_eq!(&file_header[6 + 8..6 + 2 * 8], "000081ED");
        // 116 + 110 + "bin/x\0" (6) = 232, data at 232..237, padded to 240.
        assert_eq!(&out[232..237], b"hello");
        assert_eq!(&out[240..246], b"070701");
        let trailer = &out[240 + 110..240 + 110 + 10];
        assert_eq!(trailer, b"TRAILER!!!");
    }
}
