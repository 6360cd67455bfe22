//! Builds the demo site used by `cargo xtask demo` under the directory given (target/demo).

use hokan_e2e::MailwiseTree;
use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).expect("usage: make-demo-site DIR"));
    let site = root.join("tokyo-hq");
    if site.exists() {
        std::fs::remove_dir_all(&site).expect("cannot clear the old demo site");
    }
    let tree = MailwiseTree::default();
    tree.build(&site.join("mailwise"));
    // A standby server where mailwise was just installed: empty databases, no mail, no archives.
    let fresh = MailwiseTree {
        mail_spaces: vec![],
        archives: vec![],
        db_bytes: 64,
        ..MailwiseTree::default()
    };
    fresh.build(&site.join("mailwise-standby"));
    println!("demo site ready in {}", site.display());
}
