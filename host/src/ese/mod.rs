//! Physical verification of ESE ("JET Blue") databases, the format of Exchange Server's
//! `Priv.edb` and `Pub.edb`: every page's checksum, as the store checks it during an online
//! backup. A page that fails is what Exchange reports as `-1018 JET_errReadVerifyFailure`, and a
//! backup must not keep such a database as good.
//!
//! [`check`] streams a database once: it takes the page size from the header, then verifies
//! the header, its shadow copy and every page in both checksum formats ([`checksum`]). Reading
//! and checking overlap, and pages are checked on every core, so a check costs about as much as
//! reading the file. [`build`] writes valid databases for tests, demos and benchmarks.

pub mod build;
pub mod checksum;
pub mod logs;

use serde::Serialize;
use std::fmt;
use std::io::{self, Read};

/// The file signature at offset 4 of the header (`EF CD AB 89` on disk).
pub const SIGNATURE: u32 = checksum::XOR_SEED;

/// Offset of the page size in the database header. Headers written before the field existed
/// (Exchange 5.5) hold zero there, which means 4 KiB.
pub const PAGE_SIZE_OFFSET: usize = 236;

/// Offset of the database state in the header.
pub const STATE_OFFSET: usize = 52;

/// The page sizes ESE writes.
pub const PAGE_SIZES: [usize; 5] = [2048, 4096, 8192, 16384, 32768];

/// How many bad pages a report lists one by one; the rest are only counted.
pub const LISTED_BAD_PAGES: usize = 1000;

/// Why a file could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum EseError {
    /// Reading failed.
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
    /// Too short to hold a database header.
    #[error(
        "not an ESE database: it is {0} bytes long, shorter than a database header (4096 bytes)"
    )]
    TooShort(u64),
    /// The header does not carry ESE's signature.
    #[error(
        "not an ESE database: the bytes at offset 4 are {found}, where an ESE database has ef cd ab 89"
    )]
    NotEse {
        /// The four bytes found, in hex.
        found: String,
    },
    /// The header names a page size ESE does not use.
    #[error(
        "the header's page size (offset {PAGE_SIZE_OFFSET}) is {0} bytes; ESE pages are 2, 4, 8, 16 or 32 KiB, so the header is damaged: check the shadow header with the vendor's tools, or restore the file from a backup"
    )]
    BadPageSize(u32),
    /// The file ends inside a page, or before its first data page.
    #[error(
        "truncated: {len} bytes is not whole {page_size}-byte pages ({whole} whole pages, then {rest} bytes){}; the file was cut short, restore it from a backup",
        if *whole < 3 { ", and a database has at least its header, the shadow header and one page" } else { "" }
    )]
    Truncated {
        /// The file's length in bytes.
        len: u64,
        /// Its page size.
        page_size: usize,
        /// How many whole pages it holds (headers included).
        whole: u64,
        /// The bytes after the last whole page.
        rest: u64,
    },
}

/// The state the database header records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DbState {
    /// Created, never attached.
    JustCreated,
    /// Not shut down cleanly: it needs its logs replayed before it is consistent.
    DirtyShutdown,
    /// Shut down cleanly: consistent on its own.
    CleanShutdown,
    /// In format conversion.
    BeingConverted,
    /// Detached by force.
    ForceDetach,
    /// A value ESE does not define.
    Unknown(u32),
}

impl DbState {
    fn from_raw(v: u32) -> Self {
        match v {
            1 => DbState::JustCreated,
            2 => DbState::DirtyShutdown,
            3 => DbState::CleanShutdown,
            4 => DbState::BeingConverted,
            5 => DbState::ForceDetach,
            v => DbState::Unknown(v),
        }
    }
}

impl fmt::Display for DbState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbState::JustCreated => f.write_str("just created"),
            DbState::DirtyShutdown => f.write_str("dirty shutdown"),
            DbState::CleanShutdown => f.write_str("clean shutdown"),
            DbState::BeingConverted => f.write_str("being converted"),
            DbState::ForceDetach => f.write_str("force detached"),
            DbState::Unknown(v) => write!(f, "state {v}"),
        }
    }
}

/// What the database header says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    /// The format version (`0x620` for Exchange 5.5).
    pub format_version: u32,
    /// The page size in bytes.
    pub page_size: usize,
    /// Whether the header states the page size (older headers leave it zero: 4 KiB).
    pub page_size_stated: bool,
    /// The database state.
    pub state: DbState,
}

impl Header {
    /// Reads a header from the first bytes of a file (at least 4096 of them, or all there are).
    pub fn parse(b: &[u8]) -> Result<Header, EseError> {
        if b.len() < 4096 {
            return Err(EseError::TooShort(b.len() as u64));
        }
        let word = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        if word(4) != SIGNATURE {
            let found = b[4..8]
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>();
            return Err(EseError::NotEse {
                found: found.join(" "),
            });
        }
        let raw = word(PAGE_SIZE_OFFSET);
        let page_size = match raw {
            0 => 4096,
            n if PAGE_SIZES.contains(&(n as usize)) => n as usize,
            n => return Err(EseError::BadPageSize(n)),
        };
        Ok(Header {
            format_version: word(8),
            page_size,
            page_size_stated: raw != 0,
            state: DbState::from_raw(word(STATE_OFFSET)),
        })
    }
}

/// Which page of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PageId {
    /// The database header (file page 0).
    Header,
    /// Its shadow copy (file page 1).
    ShadowHeader,
    /// A database page, by its page number (file page `n + 1`).
    Page(u32),
}

impl fmt::Display for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageId::Header => f.write_str("the database header"),
            PageId::ShadowHeader => f.write_str("the shadow header"),
            PageId::Page(n) => write!(f, "page {n}"),
        }
    }
}

/// What is wrong with a page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Problem {
    /// The legacy XOR-32 checksum does not match.
    Xor32 {
        /// The checksum on the page.
        stored: u32,
        /// The checksum of its contents.
        computed: u32,
    },
    /// A legacy page carries another page's number: the right data at the wrong place.
    PageNumber {
        /// The number on the page.
        stored: u32,
        /// The number its place in the file gives it.
        expected: u32,
    },
    /// An ECC-32/XOR-32 checksum does not match.
    EccXor {
        /// The block of the page (0 for pages of 8 KiB or less).
        block: usize,
        /// The checksum on the page.
        stored: u64,
        /// The checksum of its contents.
        computed: u64,
        /// When the difference is one flipped bit: that bit, as a byte offset in the file and
        /// a bit number (0 = least significant).
        flipped_bit: Option<(u64, u8)>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Xor32 { stored, computed } => write!(
                f,
                "XOR-32 checksum {stored:#010x} on the page, {computed:#010x} computed"
            ),
            Problem::PageNumber { stored, expected } => write!(
                f,
                "the page says it is page {stored}, but it is at the place of page {expected}"
            ),
            Problem::EccXor {
                block,
                stored,
                computed,
                flipped_bit,
            } => {
                write!(
                    f,
                    "ECC-32/XOR-32 checksum {stored:#018x} on the page, {computed:#018x} computed"
                )?;
                if *block > 0 {
                    write!(f, " (block {block})")?;
                }
                if let Some((byte, bit)) = flipped_bit {
                    write!(
                        f,
                        "; one flipped bit: byte {byte} bit {bit} (the ECC could correct it, but the copy on disk is damaged)"
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// One page that failed verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadPage {
    /// Which page.
    pub page: PageId,
    /// Its byte offset in the file.
    pub offset: u64,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for BadPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "-1018 JET_errReadVerifyFailure: {} at offset {}: {}",
            self.page, self.offset, self.problem
        )
    }
}

/// The result of checking a whole database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// What the header says.
    pub header: Header,
    /// Database pages checked (the two header pages not counted).
    pub pages: u64,
    /// Of those, pages never written (all zero), which carry no checksum.
    pub uninitialized: u64,
    /// Of those, pages in the ECC-32/XOR-32 format.
    pub ecc_pages: u64,
    /// Every bad page, up to [`LISTED_BAD_PAGES`], in file order.
    pub bad: Vec<BadPage>,
    /// How many pages are bad in all (headers included).
    pub bad_count: u64,
    /// Bytes read.
    pub bytes: u64,
}

impl Report {
    /// Whether every page is good.
    pub fn is_clean(&self) -> bool {
        self.bad_count == 0
    }

    /// The checksum formats seen, for people.
    pub fn formats(&self) -> &'static str {
        match (
            self.ecc_pages,
            self.pages - self.uninitialized - self.ecc_pages,
        ) {
            (0, _) => "legacy XOR-32",
            (_, 0) => "ECC-32/XOR-32",
            _ => "legacy XOR-32 and ECC-32/XOR-32",
        }
    }
}

/// How one page fared.
enum Verdict {
    Good { ecc: bool },
    Uninitialized,
    Bad(BadPage),
}

fn verify_header(page: &[u8], id: PageId, offset: u64) -> Option<BadPage> {
    let stored = u32::from_le_bytes(page[..4].try_into().expect("4 bytes"));
    let computed = checksum::xor32(page);
    (stored != computed).then_some(BadPage {
        page: id,
        offset,
        problem: Problem::Xor32 { stored, computed },
    })
}

fn verify_page(page: &[u8], pgno: u32, offset: u64) -> Verdict {
    // A written page never has a zero checksum field in practice; only then look further.
    if page[..8] == [0; 8] && page.iter().all(|&b| b == 0) {
        return Verdict::Uninitialized;
    }
    let bad = |problem| {
        Verdict::Bad(BadPage {
            page: PageId::Page(pgno),
            offset,
            problem,
        })
    };
    if checksum::is_new_format(page) {
        let cb = checksum::block_size(page.len());
        let stored = checksum::stored(page);
        for (block, data) in page.chunks_exact(cb).enumerate() {
            let computed = checksum::ecc_xor(data, pgno, block == 0);
            if computed != stored[block] {
                let flipped_bit =
                    checksum::single_bit_error(cb, stored[block], computed).map(|bit| {
                        let byte = offset + (block * cb + bit / 8) as u64;
                        (byte, (bit % 8) as u8)
                    });
                return bad(Problem::EccXor {
                    block,
                    stored: stored[block],
                    computed,
                    flipped_bit,
                });
            }
        }
        Verdict::Good { ecc: true }
    } else {
        let word = |at: usize| u32::from_le_bytes(page[at..at + 4].try_into().expect("4 bytes"));
        let computed = checksum::xor32(page);
        if word(0) != computed {
            return bad(Problem::Xor32 {
                stored: word(0),
                computed,
            });
        }
        if word(4) != pgno {
            return bad(Problem::PageNumber {
                stored: word(4),
                expected: pgno,
            });
        }
        Verdict::Good { ecc: false }
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Bytes read and checked per chunk: big enough to keep every core busy, small enough to keep
/// memory flat (two chunks are in flight).
const CHUNK: usize = 4 << 20;

/// Checks a whole database read from `r`. `len`, when known, lets a truncated file be refused
/// before it is read; `progress` hears the bytes read so far after every chunk.
pub fn check(
    mut r: impl Read + Send,
    len: Option<u64>,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, EseError> {
    let mut first = vec![0u8; 4096];
    let n = read_full(&mut r, &mut first)?;
    first.truncate(n);
    let header = Header::parse(&first)?;
    let ps = header.page_size;
    let truncated = |len: u64| EseError::Truncated {
        len,
        page_size: ps,
        whole: len / ps as u64,
        rest: len % ps as u64,
    };
    if let Some(len) = len
        && (len % ps as u64 != 0 || len < 3 * ps as u64)
    {
        return Err(truncated(len));
    }
    // The header and its shadow.
    let mut headers = first;
    headers.resize(2 * ps, 0);
    let got = 4096 + read_full(&mut r, &mut headers[4096..])?;
    if got < 2 * ps {
        return Err(truncated(got as u64));
    }
    let mut report = Report {
        header,
        pages: 0,
        uninitialized: 0,
        ecc_pages: 0,
        bad: Vec::new(),
        bad_count: 0,
        bytes: got as u64,
    };
    for (i, id) in [PageId::Header, PageId::ShadowHeader]
        .into_iter()
        .enumerate()
    {
        if let Some(b) = verify_header(&headers[i * ps..(i + 1) * ps], id, (i * ps) as u64) {
            report.bad_count += 1;
            report.bad.push(b);
        }
    }
    progress(report.bytes);

    // The pages: one thread reads chunk n+1 while every core checks chunk n.
    let chunk = CHUNK / ps * ps;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(1);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    for _ in 0..2 {
        empty_tx.send(vec![0u8; chunk]).expect("room for two");
    }
    let mut read_error = None;
    std::thread::scope(|s| {
        let reader = s.spawn(move || -> io::Result<()> {
            while let Ok(mut buf) = empty_rx.recv() {
                let n = read_full(&mut r, &mut buf)?;
                if n == 0 || full_tx.send((buf, n)).is_err() {
                    break;
                }
                if n < chunk {
                    break;
                }
            }
            Ok(())
        });
        while let Ok((buf, n)) = full_rx.recv() {
            let base = report.bytes;
            self::check_chunk(&buf[..n / ps * ps], ps, base, &mut report);
            report.bytes += n as u64;
            progress(report.bytes);
            if n % ps != 0 {
                read_error = Some(truncated(report.bytes));
                break;
            }
            // The reader may have stopped (end of input); then nobody takes the buffer back.
            let _ = empty_tx.send(buf);
        }
        drop(full_rx);
        drop(empty_tx);
        if let Err(e) = reader.join().expect("the reader does not panic") {
            read_error.get_or_insert(EseError::Io(e));
        }
    });
    if let Some(e) = read_error {
        return Err(e);
    }
    if report.pages == 0 {
        return Err(truncated(report.bytes));
    }
    Ok(report)
}

fn check_chunk(buf: &[u8], ps: usize, base: u64, report: &mut Report) {
    use rayon::prelude::*;
    let first_pgno = (base / ps as u64 - 1) as u32;
    let verdicts: Vec<(u64, u64, u64, Vec<BadPage>)> = buf
        .par_chunks_exact(ps)
        .enumerate()
        .fold(
            || (0u64, 0u64, 0u64, Vec::new()),
            |(mut n, mut empty, mut ecc, mut bad), (i, page)| {
                let pgno = first_pgno + i as u32;
                n += 1;
                match verify_page(page, pgno, base + (i * ps) as u64) {
                    Verdict::Good { ecc: e } => ecc += u64::from(e),
                    Verdict::Uninitialized => empty += 1,
                    Verdict::Bad(b) => bad.push(b),
                }
                (n, empty, ecc, bad)
            },
        )
        .collect();
    for (n, empty, ecc, bad) in verdicts {
        report.pages += n;
        report.uninitialized += empty;
        report.ecc_pages += ecc;
        report.bad_count += bad.len() as u64;
        let room = LISTED_BAD_PAGES.saturating_sub(report.bad.len());
        // Fold parts come back in page order, so the list stays in file order.
        report.bad.extend(bad.into_iter().take(room));
    }
}

/// Checks the database at `path` (see [`check`]).
pub fn check_file(
    path: &std::path::Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, EseError> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    check(f, Some(len), progress)
}

#[cfg(test)]
mod tests {
    use super::build::{DbBuilder, PageFormat};
    use super::*;

    fn db(format: PageFormat, page_size: usize, pages: u32) -> Vec<u8> {
        let mut out = Vec::new();
        DbBuilder::new(format, page_size)
            .write_to(pages, &mut out)
            .unwrap();
        out
    }

    fn run(bytes: &[u8]) -> Result<Report, EseError> {
        check(bytes, Some(bytes.len() as u64), &mut |_| {})
    }

    #[test]
    fn a_built_database_is_clean_in_every_format_and_size() {
        for (format, size) in [
            (PageFormat::Legacy, 4096),
            (PageFormat::Legacy, 8192),
            (PageFormat::Ecc, 4096),
            (PageFormat::Ecc, 8192),
            (PageFormat::Ecc, 16384),
            (PageFormat::Ecc, 32768),
        ] {
            let r = run(&db(format, size, 300)).unwrap();
            assert!(r.is_clean(), "{format:?} {size}: {:?}", r.bad);
            assert_eq!(r.pages, 300);
            assert_eq!(r.header.page_size, size);
            assert!(r.uninitialized > 0, "the builder leaves some pages unused");
            let used = r.pages - r.uninitialized;
            let ecc = if format == PageFormat::Ecc { used } else { 0 };
            assert_eq!(r.ecc_pages, ecc);
        }
    }

    #[test]
    fn a_flipped_bit_is_reported_with_page_and_offset() {
        for (format, size) in [(PageFormat::Legacy, 4096), (PageFormat::Ecc, 32768)] {
            let mut b = db(format, size, 300);
            // Page 57 is file page 58; flip bit 2 of its byte 1000.
            let at = 58 * size + 1000;
            b[at] ^= 0x04;
            let r = run(&b).unwrap();
            assert_eq!(r.bad_count, 1);
            let bad = &r.bad[0];
            assert_eq!(bad.page, PageId::Page(57));
            assert_eq!(bad.offset, 58 * size as u64);
            let text = bad.to_string();
            assert!(
                text.starts_with("-1018 JET_errReadVerifyFailure: page 57 at offset"),
                "{text}"
            );
            if format == PageFormat::Ecc {
                assert!(
                    matches!(bad.problem, Problem::EccXor { flipped_bit: Some((byte, 2)), .. } if byte == at as u64),
                    "{bad}"
                );
            }
        }
    }

    #[test]
    fn a_page_in_the_wrong_place_is_caught() {
        let size = 4096;
        let mut b = db(PageFormat::Legacy, size, 50);
        // Copy page 10 over page 11: a good page, in the wrong place.
        let (p10, p11) = (11 * size, 12 * size);
        let page10 = b[p10..p10 + size].to_vec();
        b[p11..p11 + size].copy_from_slice(&page10);
        let r = run(&b).unwrap();
        assert_eq!(r.bad_count, 1);
        assert_eq!(
            r.bad[0].problem,
            Problem::PageNumber {
                stored: 10,
                expected: 11
            }
        );
        // With ECC checksums the page number is part of the checksum.
        let mut b = db(PageFormat::Ecc, size, 50);
        let page10 = b[p10..p10 + size].to_vec();
        b[p11..p11 + size].copy_from_slice(&page10);
        assert_eq!(run(&b).unwrap().bad[0].page, PageId::Page(11));
    }

    #[test]
    fn a_damaged_header_is_reported() {
        let mut b = db(PageFormat::Legacy, 4096, 10);
        b[4096 + 300] ^= 1;
        let r = run(&b).unwrap();
        assert_eq!(r.bad_count, 1);
        assert_eq!(r.bad[0].page, PageId::ShadowHeader);
    }

    #[test]
    fn many_bad_pages_are_counted_but_listed_up_to_the_cap() {
        let size = 2048;
        let mut b = db(PageFormat::Ecc, size, 3000);
        for page in 2..3002 {
            b[page * size + 100] ^= 0xff;
        }
        let r = run(&b).unwrap();
        // Uninitialized pages turned non-zero are bad too; every page is bad.
        assert_eq!(r.bad_count, 3000);
        assert_eq!(r.bad.len(), LISTED_BAD_PAGES);
        assert!(r.bad.windows(2).all(|w| w[0].offset < w[1].offset));
    }

    #[test]
    fn bad_input_is_refused_clearly() {
        // Not ESE.
        let text = vec![b'x'; 10000];
        let e = run(&text).unwrap_err().to_string();
        assert!(
            e.contains("not an ESE database") && e.contains("78 78 78 78"),
            "{e}"
        );
        // Too short.
        let e = run(&[0u8; 100]).unwrap_err().to_string();
        assert!(e.contains("100 bytes long"), "{e}");
        // A page size ESE does not use.
        let mut b = db(PageFormat::Legacy, 4096, 10);
        b[PAGE_SIZE_OFFSET..PAGE_SIZE_OFFSET + 4].copy_from_slice(&3000u32.to_le_bytes());
        let e = run(&b).unwrap_err().to_string();
        assert!(
            e.contains("3000 bytes") && e.contains("2, 4, 8, 16 or 32 KiB"),
            "{e}"
        );
        // Truncated: known length, and a stream that ends early.
        let b = db(PageFormat::Ecc, 8192, 10);
        let cut = &b[..b.len() - 100];
        let e = run(cut).unwrap_err().to_string();
        assert!(e.contains("truncated") && e.contains("8092 bytes"), "{e}");
        let e = check(cut, None, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        // Headers only.
        let e = run(&b[..2 * 8192]).unwrap_err().to_string();
        assert!(e.contains("at least its header"), "{e}");
        let e = check(&b[..2 * 8192], None, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least its header"), "{e}");
    }

    #[test]
    fn a_legacy_header_without_a_page_size_means_4_kib() {
        let b = db(PageFormat::Legacy, 4096, 5);
        let r = run(&b).unwrap();
        assert!(!r.header.page_size_stated);
        assert_eq!(r.header.format_version, 0x620);
        assert_eq!(r.header.state, DbState::CleanShutdown);
    }
}
