//! ESE page verification throughput: `cargo xtask bench`.
//!
//! Writes two databases of about 1 GiB with the test builder, one of 4 KiB pages with legacy
//! XOR-32 checksums (Exchange 5.5) and one of 8 KiB pages with ECC-32/XOR-32 checksums, then, in
//! the same run and from the same (warm) page cache:
//! - reads each file with `cat FILE > /dev/null` (the baseline);
//! - checks each with `hokan ese-check FILE` (release binary): every page's checksum.
//!
//! Target (issue "Exchange Server plugin"): verification at least 0.8x the speed of reading the
//! file. `HOKAN_BENCH_MIB` sets the size (default 1024).

use hokan::ese::build::{DbBuilder, PageFormat};
use hokan_e2e::{hokan_bin, median, timed};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn main() {
    let (smoke, mib) = hokan_e2e::bench_size(1024);
    let rounds = if smoke { 1 } else { 5 };
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-ese");
    std::fs::create_dir_all(&base).unwrap();
    let mut worst = f64::INFINITY;
    for (name, format, page_size) in [
        ("legacy 4 KiB", PageFormat::Legacy, 4096),
        ("ECC 8 KiB", PageFormat::Ecc, 8192),
    ] {
        let file = base.join(format!("{page_size}.edb"));
        let pages = (mib << 20) / page_size as u64;
        DbBuilder::new(format, page_size)
            .write_file(pages as u32, &file)
            .unwrap();
        let cat = || {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("cat '{}' > /dev/null", file.display()));
            c
        };
        let check = || {
            let mut c = Command::new(hokan_bin());
            c.arg("ese-check").arg(&file);
            c
        };
        // Warm the page cache for both.
        timed(cat());
        timed(check());
        let (mut cats, mut checks) = (vec![], vec![]);
        for _ in 0..rounds {
            cats.push(timed(cat()));
            checks.push(timed(check()));
        }
        let (cat, check) = (median(cats), median(checks));
        let bytes = std::fs::metadata(&file).unwrap().len();
        let rate = |d: Duration| bytes as f64 / d.as_secs_f64() / (1 << 20) as f64;
        let ratio = cat.as_secs_f64() / check.as_secs_f64();
        worst = worst.min(ratio);
        println!(
            "{name:<13} {} MiB  cat median {cat:>9.2?} {:>6.0} MiB/s   ese-check median {check:>9.2?} {:>6.0} MiB/s   {ratio:.2}x the read speed",
            bytes >> 20,
            rate(cat),
            rate(check),
        );
        std::fs::remove_file(&file).unwrap();
    }
    if smoke {
        println!("(a smoke run of {mib} MiB: `cargo xtask bench` measures)");
        return;
    }
    println!(
        "page verification: worst {worst:.2}x the read speed (target >= 0.8x): {}",
        if worst >= 0.8 { "met" } else { "NOT met" }
    );
}
