//! File contents: a digest that does not read holes, and a copy that keeps them.
//!
//! A 5 GiB database file that uses 4 KiB on disk must be backed up in well under a second, so
//! neither the copy nor the hash may read its holes. The digest is therefore not BLAKE3 of the
//! plain bytes (that would read 5 GiB of zeros) but BLAKE3 of a stream that leaves out blocks
//! of zeros:
//!
//! ```text
//! "hokan-z64k-1\0" || size as u64 LE || for each 64 KiB block i that is not all zeros:
//!     i as u64 LE || the block's bytes
//! ```
//!
//! Block lengths follow from the size, so the stream determines the contents exactly, and two
//! files with the same bytes have the same digest whether their zeros are holes or written
//! blocks: a set copied to a filesystem without holes still verifies. Holes are found with
//! `SEEK_DATA`/`SEEK_HOLE`; data extents are read in 1 MiB pieces.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The digest's name in the manifest.
pub const ALGORITHM: &str = "blake3-z64k-1";
/// Zero blocks of this size are left out of the digest and are holes in copies.
pub const BLOCK: u64 = 64 * 1024;
const READ: usize = 16 * BLOCK as usize;

thread_local! {
    /// Each thread's read buffer and write run, kept between files: a backup reads thousands
    /// of small files, and zeroing two fresh 1 MiB buffers for each cost more than reading it.
    static BUFFERS: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with this thread's buffers, taken out of their cell while it runs (so a nested
/// call gets fresh ones rather than a borrow panic).
fn with_buffers<T>(f: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> T) -> T {
    let (mut read, mut run) = BUFFERS.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let out = f(&mut read, &mut run);
    BUFFERS.with(|b| *b.borrow_mut() = (read, run));
    out
}

/// Whether every byte is zero (an OR over 4 KiB pieces, which vectorizes).
fn is_zero(b: &[u8]) -> bool {
    b.chunks(4096)
        .all(|c| c.iter().fold(0u8, |acc, &x| acc | x) == 0)
}

/// The data extents of a file of `size` bytes as `(start, end)`, from SEEK_DATA/SEEK_HOLE; a
/// filesystem that does not report holes gives one extent.
fn extents(f: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::SeekFrom;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match rustix::fs::seek(f, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL) if pos == 0 => {
                out.push((0, size));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let end = match rustix::fs::seek(f, SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(rustix::io::Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}

/// Reads the blocks that hold data, in order, and calls `each(block index, bytes)` for every
/// block that is not all zeros. Returns the bytes read.
fn for_each_block(
    f: &File,
    size: u64,
    buf: &mut Vec<u8>,
    mut each: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    if buf.len() < READ {
        buf.resize(READ, 0);
    }
    let mut next = 0u64; // the first block not yet handed out
    let mut read = 0u64;
    for (start, end) in extents(f, size)? {
        let mut block = (start / BLOCK).max(next);
        let last = end.div_ceil(BLOCK);
        while block < last {
            let off = block * BLOCK;
            let want = (((last - block) * BLOCK) as usize)
                .min(READ)
                .min((size - off) as usize);
            let mut got = 0;
            while got < want {
                match f.read_at(&mut buf[got..want], off + got as u64) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the file ended at {} bytes, not {size}", off + got as u64),
                        ));
                    }
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            read += want as u64;
            for (i, piece) in buf[..want].chunks(BLOCK as usize).enumerate() {
                if !is_zero(piece) {
                    each(block + i as u64, piece)?;
                }
            }
            block += (want as u64).div_ceil(BLOCK);
        }
        next = last;
    }
    Ok(read)
}

fn hasher(size: u64) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    h.update(b"hokan-z64k-1\0");
    h.update(&size.to_le_bytes());
    h
}

/// The digest of the first `size` bytes of `f` (hex).
pub fn digest(f: &File, size: u64) -> io::Result<String> {
    blocks(f, size, |_, _| Ok(()))
}

/// Reads the first `size` bytes of `f` as the digest does, hands each block that is not all
/// zeros to `each(block index, bytes)` (an agent sends them so), and returns the digest. What
/// `each` is given, fed to a [`Sink`] of the same size, rebuilds the file and its digest.
pub fn blocks(
    f: &File,
    size: u64,
    mut each: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<String> {
    let mut h = hasher(size);
    with_buffers(|buf, _| {
        for_each_block(f, size, buf, |i, b| {
            each(i, b)?;
            h.update(&i.to_le_bytes());
            h.update(b);
            Ok(())
        })
    })?;
    Ok(h.finalize().to_hex().to_string())
}

/// A file of `size` bytes being written from blocks that arrive over a connection (what
/// [`blocks`] handed out on the other side), hashed as they arrive: the digest is the one
/// [`digest`] gives for the file written, whatever the sender claims.
pub struct Sink<'a> {
    to: &'a File,
    size: u64,
    h: blake3::Hasher,
    /// The first block index still allowed (blocks come in order, each once).
    next: u64,
    /// Where the data written so far ends.
    end: u64,
}

impl<'a> Sink<'a> {
    /// Writes into the empty file `to`, which will be `size` bytes long.
    pub fn new(to: &'a File, size: u64) -> Sink<'a> {
        Sink {
            to,
            size,
            h: hasher(size),
            next: 0,
            end: 0,
        }
    }

    /// Block `i`: it must come after the blocks before it and be as long as block `i` of a
    /// file of this size is. A block of zeros is a hole, neither written nor hashed.
    pub fn block(&mut self, i: u64, b: &[u8]) -> io::Result<()> {
        let at = i.checked_mul(BLOCK).filter(|at| *at < self.size);
        let want = at.map(|at| (self.size - at).min(BLOCK));
        if i < self.next || want != Some(b.len() as u64) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "block {i} of {} bytes does not belong in a file of {} bytes after block {}",
                    b.len(),
                    self.size,
                    self.next.saturating_sub(1)
                ),
            ));
        }
        self.next = i + 1;
        if is_zero(b) {
            return Ok(());
        }
        let at = i * BLOCK;
        self.to.write_all_at(b, at)?;
        self.end = at + b.len() as u64;
        self.h.update(&i.to_le_bytes());
        self.h.update(b);
        Ok(())
    }

    /// The file given its full length (it may end in a hole); its digest.
    pub fn finish(self) -> io::Result<String> {
        if self.end < self.size {
            self.to.set_len(self.size)?;
        }
        Ok(self.h.finalize().to_hex().to_string())
    }
}

/// The digest of bytes in memory, as [`digest`] would give for a file holding them.
pub fn digest_bytes(b: &[u8]) -> String {
    let mut h = hasher(b.len() as u64);
    for (i, piece) in b.chunks(BLOCK as usize).enumerate() {
        if !is_zero(piece) {
            h.update(&(i as u64).to_le_bytes());
            h.update(piece);
        }
    }
    h.finalize().to_hex().to_string()
}

/// Copies the first `size` bytes of `from` into the empty file `to`, leaving holes where
/// `from` has holes or blocks of zeros, and returns the digest of what was copied and the
/// bytes read. `written(n)` is called as data is written, for progress and space accounting;
/// an error from it stops the copy.
pub fn copy(
    from: &File,
    to: &File,
    size: u64,
    mut written: impl FnMut(u64) -> io::Result<()>,
) -> io::Result<(String, u64)> {
    let mut h = hasher(size);
    // Consecutive blocks of data go out in one write of up to 1 MiB: filesystems lay out large
    // writes better than many 64 KiB ones.
    let (read, end) = with_buffers(|buf, run| -> io::Result<(u64, u64)> {
        run.clear();
        if run.capacity() < READ {
            run.reserve_exact(READ);
        }
        let mut run_at = 0u64;
        // Where the data written so far ends.
        let mut end = 0u64;
        let mut flush = |run: &mut Vec<u8>, at: u64| -> io::Result<()> {
            if !run.is_empty() {
                to.write_all_at(run, at)?;
                end = at + run.len() as u64;
                run.clear();
            }
            Ok(())
        };
        let read = for_each_block(from, size, buf, |i, b| {
            written(b.len() as u64)?;
            let at = i * BLOCK;
            if run_at + run.len() as u64 != at || run.len() + b.len() > READ {
                flush(run, run_at)?;
                run_at = at;
            }
            run.extend_from_slice(b);
            h.update(&i.to_le_bytes());
            h.update(b);
            Ok(())
        })?;
        flush(run, run_at)?;
        Ok((read, end))
    })?;
    // The length, when the file ends in a hole or zeros that were not written.
    if end < size {
        to.set_len(size)?;
    }
    Ok((h.finalize().to_hex().to_string(), read))
}

/// Starts writing `f`'s data to disk without waiting for it (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`, as git's batch fsync mode does). A backup names its set only after
/// a `syncfs` of it; started early, the writeback runs beside the copy instead of after it, and
/// that `syncfs` has little left to wait for. Advisory: a filesystem that does not support it
/// loses nothing, and a write error surfaces in the `syncfs`, which reports it.
pub fn start_writeback(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads its arguments; the descriptor is open for the call.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn holes_are_neither_read_nor_written_and_do_not_change_the_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let sparse = tmp.path().join("sparse");
        let f = File::create(&sparse).unwrap();
        let size = 1u64 << 30;
        f.set_len(size).unwrap();
        f.write_all_at(b"middle", size / 2 + 7).unwrap();
        f.write_all_at(b"end", size - 3).unwrap();
        drop(f);
        let f = File::open(&sparse).unwrap();
        let d = digest(&f, size).unwrap();

        // The same bytes written out in full (zeros as data) give the same digest.
        let mut plain = vec![0u8; (3 * BLOCK) as usize];
        plain[7] = b'm';
        let dense = tmp.path().join("dense");
        std::fs::write(&dense, &plain).unwrap();
        let g = File::open(&dense).unwrap();
        assert_eq!(
            digest(&g, plain.len() as u64).unwrap(),
            digest_bytes(&plain)
        );

        let copied = tmp.path().join("copy");
        let out = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&copied)
            .unwrap();
        let mut wrote = 0;
        let (d2, read) = super::copy(&f, &out, size, |n| {
            wrote += n;
            Ok(())
        })
        .unwrap();
        assert_eq!(d, d2);
        assert!(
            read <= 4 * BLOCK * 16,
            "read {read} bytes of a 1 GiB sparse file"
        );
        assert_eq!(wrote, 2 * BLOCK);
        let m = std::fs::metadata(&copied).unwrap();
        assert_eq!(m.len(), size);
        assert!(
            m.blocks() * 512 < 1 << 20,
            "the copy is not sparse: {} blocks",
            m.blocks()
        );
        assert_eq!(digest(&File::open(&copied).unwrap(), size).unwrap(), d);
        let mut tail = [0u8; 3];
        File::open(&copied)
            .unwrap()
            .read_exact_at(&mut tail, size - 3)
            .unwrap();
        assert_eq!(&tail, b"end");

        // Different bytes, or the same bytes and another length, differ.
        assert_ne!(digest_bytes(b"a"), digest_bytes(b"b"));
        assert_ne!(digest_bytes(&[0]), digest_bytes(&[0, 0]));
        assert_eq!(
            digest_bytes(b""),
            digest(&File::open(&dense).unwrap(), 0).unwrap()
        );
    }

    #[test]
    fn blocks_handed_out_rebuild_the_file_and_its_digest_and_a_stray_block_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = [vec![5u8; 10], vec![0u8; 2 * BLOCK as usize], vec![9u8; 77]].concat();
        let src = tmp.path().join("src");
        std::fs::write(&src, &bytes).unwrap();
        let f = File::open(&src).unwrap();
        let mut sent = Vec::new();
        let d = blocks(&f, bytes.len() as u64, |i, b| {
            sent.push((i, b.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(d, digest_bytes(&bytes));
        assert_eq!(
            sent.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 2],
            "the block of zeros is not sent"
        );
        let out = File::create_new(tmp.path().join("dst")).unwrap();
        let mut sink = Sink::new(&out, bytes.len() as u64);
        for (i, b) in &sent {
            sink.block(*i, b).unwrap();
        }
        assert_eq!(sink.finish().unwrap(), d);
        assert_eq!(std::fs::read(tmp.path().join("dst")).unwrap(), bytes);

        // Out of order, twice, too long, past the end: a confused sender is refused.
        let out = File::create_new(tmp.path().join("bad")).unwrap();
        let mut sink = Sink::new(&out, bytes.len() as u64);
        sink.block(2, &sent[1].1).unwrap();
        assert!(sink.block(0, &sent[0].1).is_err());
        assert!(sink.block(2, &sent[1].1).is_err());
        assert!(sink.block(3, b"x").is_err());
        let mut sink = Sink::new(&out, 10);
        assert!(sink.block(0, &[1u8; 11]).is_err());
        assert!(sink.block(u64::MAX, b"x").is_err());
    }

    #[test]
    fn a_copy_has_the_length_of_its_source_whether_it_ends_in_data_zeros_or_a_hole() {
        let tmp = tempfile::tempdir().unwrap();
        let cases: [(&str, Vec<u8>); 4] = [
            ("empty", vec![]),
            ("short", b"odd length".to_vec()),
            // Written zeros at the end are not written to the copy: its length must still be
            // set.
            (
                "zeros",
                [vec![7u8; 100], vec![0u8; 3 * BLOCK as usize]].concat(),
            ),
            ("data", vec![1u8; 2 * BLOCK as usize + 5]),
        ];
        for (name, bytes) in cases {
            let src = tmp.path().join(name);
            std::fs::write(&src, &bytes).unwrap();
            let dst = tmp.path().join(format!("{name}.copy"));
            let out = File::create_new(&dst).unwrap();
            let (d, _) = super::copy(&File::open(&src).unwrap(), &out, bytes.len() as u64, |_| {
                Ok(())
            })
            .unwrap();
            drop(out);
            assert_eq!(std::fs::read(&dst).unwrap(), bytes, "{name}");
            assert_eq!(d, digest_bytes(&bytes), "{name}");
        }
    }
}
