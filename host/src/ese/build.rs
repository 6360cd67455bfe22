//! Writes valid ESE databases, for tests, demos and benchmarks: a header and its shadow, then
//! pages with busy, deterministic contents and correct checksums in either format. Every 97th
//! page is left unused (all zero), as free pages in a real database are.

use super::checksum::{self, FLAG_NEW_CHECKSUM, FLAGS_OFFSET};
use super::{PAGE_SIZE_OFFSET, SIGNATURE, STATE_OFFSET};
use std::io::{self, Write};

/// The checksum format of the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageFormat {
    /// Legacy XOR-32 and page number (Exchange 5.5).
    Legacy,
    /// ECC-32/XOR-32 (flag `0x2000`).
    Ecc,
}

/// A database to write.
#[derive(Debug, Clone)]
pub struct DbBuilder {
    format: PageFormat,
    page_size: usize,
    state: u32,
    seed: u32,
}

impl DbBuilder {
    /// A cleanly shut down database of `page_size`-byte pages. Legacy 4 KiB databases get an
    /// Exchange 5.5 header, which leaves the page size field zero.
    ///
    /// # Panics
    /// When `page_size` is not one ESE uses, or legacy pages are larger than 8 KiB.
    pub fn new(format: PageFormat, page_size: usize) -> Self {
        assert!(
            super::PAGE_SIZES.contains(&page_size),
            "page size {page_size}"
        );
        assert!(
            format == PageFormat::Ecc || page_size <= 8192,
            "pages over 8 KiB always use ECC checksums"
        );
        DbBuilder {
            format,
            page_size,
            state: 3,
            seed: 0x5eed,
        }
    }

    /// Records a dirty shutdown in the header (a database with logs still to replay).
    pub fn dirty(mut self) -> Self {
        self.state = 2;
        self
    }

    /// Varies the pages' contents.
    pub fn seed(mut self, seed: u32) -> Self {
        self.seed = seed;
        self
    }

    /// The header page (also the shadow header).
    pub fn header(&self) -> Vec<u8> {
        let mut h = vec![0u8; self.page_size];
        h[4..8].copy_from_slice(&SIGNATURE.to_le_bytes());
        h[8..12].copy_from_slice(&0x620u32.to_le_bytes());
        h[STATE_OFFSET..STATE_OFFSET + 4].copy_from_slice(&self.state.to_le_bytes());
        let stated = if self.format == PageFormat::Legacy && self.page_size == 4096 {
            0
        } else {
            self.page_size as u32
        };
        h[PAGE_SIZE_OFFSET..PAGE_SIZE_OFFSET + 4].copy_from_slice(&stated.to_le_bytes());
        let sum = checksum::xor32(&h);
        h[..4].copy_from_slice(&sum.to_le_bytes());
        h
    }

    /// Page `pgno` (1-based), checksums included; all zero when it is an unused page.
    pub fn page(&self, pgno: u32) -> Vec<u8> {
        let mut p = vec![0u8; self.page_size];
        if pgno.is_multiple_of(97) {
            return p;
        }
        let mut x = self.seed ^ pgno.wrapping_mul(0x9e37_79b9) | 1;
        for chunk in p.chunks_exact_mut(4) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        // A plausible header: previous and next page, the flags.
        p[8..16].copy_from_slice(&(u64::from(pgno) * 7).to_le_bytes());
        p[16..20].copy_from_slice(&pgno.saturating_sub(1).to_le_bytes());
        p[20..24].copy_from_slice(&(pgno + 1).to_le_bytes());
        let flags = match self.format {
            PageFormat::Legacy => 0x0002,
            PageFormat::Ecc => 0x0002 | FLAG_NEW_CHECKSUM,
        };
        p[FLAGS_OFFSET..FLAGS_OFFSET + 4].copy_from_slice(&flags.to_le_bytes());
        if self.page_size > 8192 {
            p[64..68].copy_from_slice(&pgno.to_le_bytes());
        }
        checksum::seal(&mut p, pgno);
        p
    }

    /// Writes the header, its shadow and `pages` pages.
    pub fn write_to(&self, pages: u32, mut out: impl Write) -> io::Result<()> {
        let h = self.header();
        out.write_all(&h)?;
        out.write_all(&h)?;
        for pgno in 1..=pages {
            out.write_all(&self.page(pgno))?;
        }
        out.flush()
    }

    /// Writes the database to a file.
    pub fn write_file(&self, pages: u32, path: &std::path::Path) -> io::Result<()> {
        self.write_to(pages, io::BufWriter::new(std::fs::File::create(path)?))
    }
}
