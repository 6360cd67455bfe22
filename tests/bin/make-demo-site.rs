//! Builds the demo sites used by `cargo xtask demo` under the directory given (target/demo):
//! the directories the bundled policies point at, and the stand-ins' state (every product in
//! service) with the topology they check their order against.

use hokan_e2e::MailwiseTree;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).expect("usage: make-demo-site DIR"));
    for site in ["tokyo-hq", "osaka-groupmax", "nagoya-teamware", "standins"] {
        let dir = root.join(site);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("cannot clear the old demo site");
        }
    }
    let site = root.join("tokyo-hq");
    MailwiseTree::default().build(&site.join("mailwise"));
    // A standby server where mailwise was just installed: empty databases, no mail, no archives.
    let fresh = MailwiseTree {
        mail_spaces: vec![],
        archives: vec![],
        db_bytes: 64,
        ..MailwiseTree::default()
    };
    fresh.build(&site.join("mailwise-standby"));

    // Groupmax: both servers' backup targets, the master's journals, the secondary medium.
    let gm = root.join("osaka-groupmax");
    for (path, bytes) in [
        ("gm-master/GroupMail/nxsdir/address/nxsadr.db", 256 * 1024),
        ("gm-master/GroupMail/mail/db/mailbox.db", 1024 * 1024),
        ("gm-master/GroupMail/mail/conf/server.conf", 64),
        ("gm-master/mng-journal/MCH_JOURNAL/00000001.jnl", 4096),
        ("gm-master/mng-journal/MCH_JOURNAL/00000002.jnl", 4096),
        ("gm-master/nxsdir/journal/gmmail1", 2048),
        ("gm-master/nxsdir/journal/gmmail1.001", 2048),
        ("gm-master/nxsdir/journal/gmmail10.jnl", 2048),
        ("gm-mail1/GroupMail/nxsdir/address/nxsadr.db", 256 * 1024),
        ("gm-mail1/GroupMail/mail/db/mailbox.db", 2 * 1024 * 1024),
        ("gm-mail1/GroupMail/mail/conf/server.conf", 64),
    ] {
        write(&gm.join(path), &hokan_e2e::filler(path, bytes));
    }
    std::fs::create_dir_all(gm.join("media")).unwrap();

    // TeamWARE keeps its data to itself: the backup set is all hokan sees.
    std::fs::create_dir_all(root.join("nagoya-teamware")).unwrap();

    // The stand-ins' state: everything in service. `cargo xtask demo` points STANDIN_STATE here.
    write(
        &root.join("standins/topology"),
        b"master-management gm-master\nmail gm-mail1\n\
          directory tw-dir web\napplication tw-app1 web\napplication tw-app2 web\n",
    );
    println!("demo sites ready in {}", root.display());
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}
