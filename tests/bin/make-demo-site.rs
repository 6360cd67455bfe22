//! Builds the demo sites used by `cargo xtask demo` under the directory given (target/demo):
//! the directories the bundled policies point at, and the stand-ins' state (every product in
//! service) with the topology they check their order against.

use hokan::ese::build::{DbBuilder, PageFormat};
use hokan_e2e::MailwiseTree;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).expect("usage: make-demo-site DIR"));
    for site in [
        "tokyo-hq",
        "osaka-groupmax",
        "nagoya-teamware",
        "kyoto-exchange",
        "standins",
    ] {
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

    // Exchange 5.5: real ESE databases (good page checksums), full logs of generations 0x28 to
    // 0x2F, the current log, and the checkpoint at 0x2C. The stand-ins find the store through
    // their state.
    let ex = root.join("kyoto-exchange");
    let mdbdata = ex.join("exchsrvr/mdbdata");
    let logs = ex.join("logs");
    std::fs::create_dir_all(&mdbdata).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    DbBuilder::new(PageFormat::Legacy, 4096)
        .write_file(4000, &mdbdata.join("Priv.edb"))
        .unwrap();
    DbBuilder::new(PageFormat::Legacy, 4096)
        .seed(2)
        .write_file(1000, &mdbdata.join("Pub.edb"))
        .unwrap();
    for generation in 0x28..=0x2f {
        let name = format!("Edb{generation:05X}.log");
        write(&logs.join(&name), &hokan_e2e::filler(&name, 64 * 1024));
    }
    write(
        &logs.join("Edb.log"),
        &hokan_e2e::filler("Edb.log", 16 * 1024),
    );
    write(&logs.join("Res1.log"), &hokan_e2e::filler("Res1.log", 4096));
    write(&logs.join("Edb.chk"), &hokan_e2e::ese_checkpoint(0x2c));
    write(
        &root.join("standins/ex-kyoto.databases_dir"),
        mdbdata.to_string_lossy().as_bytes(),
    );
    write(
        &root.join("standins/ex-kyoto.logs_dir"),
        logs.to_string_lossy().as_bytes(),
    );

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
