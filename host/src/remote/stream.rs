//! Files' contents across the connection, in both directions (a backup's copy from an agent to
//! the host, a restore's from the host to an agent).
//!
//! A copy first sends the tree's walk (a list of [`crate::tree::Node`]s, as
//! [`crate::tree::scan`] makes it); the receiving side makes what needs no contents itself
//! (directories, links, hard links, links from the previous set) and asks for the regular
//! files it lacks in one list. The sender then sends them in that order, each as [`Chunk`]s:
//!
//! ```text
//! File { path, meta, xattrs }  Block { index, len } + len raw bytes ...  End { digest }
//! ```
//!
//! The blocks are those of the set's digest ([`crate::tree::digest`]): the 64 KiB blocks that
//! are not all zeros, so holes cross the connection as nothing and stay holes. The receiver
//! hashes what it writes as it arrives and compares it with the sender's digest of what it
//! read; a file that cannot be read, or changed while it was read, is sent as
//! [`Chunk::Failed`], which ends the stream, and the copy fails whole (a copy-tree is all or
//! nothing, on either side).

use super::{RemoteError, put_frame, read_frame, write_frame};
use crate::execute::fs::Roots;
use crate::plan::Location;
use crate::tree::{self, Fetched, Meta, RelPath, Xattrs, digest};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// One piece of a file's contents on the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "chunk", rename_all = "kebab-case")]
pub enum Chunk {
    /// A file starts: its `lstat` when it was opened, and its attributes.
    File {
        /// The path asked for.
        path: RelPath,
        /// Its metadata.
        meta: Meta,
        /// Its extended attributes.
        xattrs: Xattrs,
    },
    /// A block of data; `len` raw bytes follow the frame.
    Block {
        /// The block's index ([`digest::BLOCK`] bytes each).
        index: u64,
        /// Its length: [`digest::BLOCK`], or less for the last block.
        len: u32,
    },
    /// The file is complete: the digest of what the sender read.
    End {
        /// The sender's digest.
        digest: String,
    },
    /// The file could not be sent; nothing more follows.
    Failed {
        /// The path asked for.
        path: RelPath,
        /// Why, in the sender's words.
        error: String,
    },
}

/// Why a file was not sent: a problem with it (sent as [`Chunk::Failed`]), or the connection.
enum NotSent {
    File(String),
    Connection(RemoteError),
}

/// Sends the regular files `files` below `at` in `roots`, in order. The first that cannot be
/// sent is sent as [`Chunk::Failed`] and ends the stream; only a failed connection is an error.
pub fn send_files(
    roots: &Roots,
    at: &Location,
    files: &[RelPath],
    w: &mut impl Write,
) -> Result<(), RemoteError> {
    for path in files {
        match send_file(roots, at, path, w) {
            Ok(()) => {}
            Err(NotSent::File(error)) => {
                return write_frame(
                    w,
                    &Chunk::Failed {
                        path: path.clone(),
                        error,
                    },
                );
            }
            Err(NotSent::Connection(e)) => return Err(e),
        }
    }
    // Each file's frames were only buffered: the receiver has them once this returns.
    w.flush()?;
    Ok(())
}

fn send_file(
    roots: &Roots,
    at: &Location,
    path: &RelPath,
    w: &mut impl Write,
) -> Result<(), NotSent> {
    use std::os::fd::AsFd;
    let file = |e: io::Error| NotSent::File(e.to_string());
    let (f, st) = roots
        .open_below(at, path)
        .map_err(|e| NotSent::File(e.to_string()))?;
    let xattrs = tree::meta::xattrs_fd(f.as_fd()).map_err(file)?;
    let conn = NotSent::Connection;
    put_frame(
        w,
        &Chunk::File {
            path: path.clone(),
            meta: st.clone(),
            xattrs,
        },
    )
    .map_err(conn)?;
    let mut lost = None;
    let sent = digest::blocks(&f, st.size, |index, b| {
        let header = Chunk::Block {
            index,
            len: b.len() as u32,
        };
        put_frame(w, &header)
            .and_then(|()| Ok(w.write_all(b)?))
            .map_err(|e| {
                lost = Some(e);
                io::Error::other("the connection failed")
            })
    });
    if let Some(e) = lost {
        return Err(conn(e));
    }
    let digest = sent.map_err(file)?;
    tree::copy::still_as_opened(&f, &st).map_err(file)?;
    put_frame(w, &Chunk::End { digest }).map_err(conn)
}

/// How the receiving side asks for the files it lacks.
pub enum Ask {
    /// The host asks an agent with [`super::Request::SendFiles`] for these files below `at`.
    Agent(Location),
    /// An agent asks the host with [`super::Reply::Want`].
    Host,
}

/// The receiving side of a copy: a [`tree::Feed`] reading [`Chunk`]s from the connection.
pub struct Receiving<'c, R, W> {
    r: &'c mut R,
    w: &'c mut W,
    ask: Ask,
    /// Called as each chunk arrives: the host's watchdog is re-armed, so a long copy that
    /// makes progress is never cut off, and a stalled one is.
    tick: &'c (dyn Fn() + Sync),
    /// Files asked for that have not ended yet.
    pending: usize,
    /// The file whose chunks are arriving, if one was left half read.
    in_file: bool,
    /// Nothing more comes: the sender failed a file, or the connection did.
    over: bool,
    /// The connection failed or is out of step: it cannot be used again.
    broken: bool,
    /// Whether the files were asked for.
    asked: bool,
    buf: Vec<u8>,
}

impl<'c, R: Read, W: Write> Receiving<'c, R, W> {
    /// A feed over `(r, w)`, asking as `ask` says.
    pub fn new(r: &'c mut R, w: &'c mut W, ask: Ask, tick: &'c (dyn Fn() + Sync)) -> Self {
        Receiving {
            r,
            w,
            ask,
            tick,
            pending: 0,
            in_file: false,
            over: false,
            broken: false,
            asked: false,
            buf: Vec::new(),
        }
    }

    /// Whether the connection can no longer be used (it failed, or a peer sent what the
    /// protocol does not have).
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Whether the files were asked for (so the sender's chunks may be on their way).
    pub fn asked(&self) -> bool {
        self.asked
    }

    fn chunk(&mut self) -> io::Result<Chunk> {
        match read_frame::<Chunk>(self.r) {
            Ok(Some(c)) => {
                (self.tick)();
                Ok(c)
            }
            Ok(None) => Err(self.lost("the connection closed in the middle of a copy".into())),
            Err(e) => Err(self.lost(e.to_string())),
        }
    }

    fn lost(&mut self, why: String) -> io::Error {
        self.broken = true;
        self.over = true;
        io::Error::new(io::ErrorKind::ConnectionAborted, why)
    }

    fn raw(&mut self, len: u32) -> io::Result<()> {
        if u64::from(len) > digest::BLOCK {
            return Err(self.lost(format!(
                "a block of {len} bytes, over the protocol's {}",
                digest::BLOCK
            )));
        }
        self.buf.resize(len as usize, 0);
        if let Err(e) = self.r.read_exact(&mut self.buf) {
            return Err(self.lost(e.to_string()));
        }
        Ok(())
    }

    /// Reads and drops what the sender still sends of the files asked for, so that the
    /// connection is in step again after a copy that failed on this side. `false` when it
    /// cannot be (it failed meanwhile).
    pub fn drain(&mut self) -> bool {
        while !self.over && (self.in_file || self.pending > 0) {
            match self.chunk() {
                Ok(Chunk::File { .. }) if !self.in_file => {
                    self.pending -= 1;
                    self.in_file = true;
                }
                Ok(Chunk::Block { len, .. }) if self.in_file => {
                    if self.raw(len).is_err() {
                        return false;
                    }
                }
                Ok(Chunk::End { .. }) if self.in_file => self.in_file = false,
                Ok(Chunk::Failed { .. }) => self.over = true,
                Ok(_) => {
                    self.lost("the sender's chunks are out of order".into());
                }
                Err(_) => {}
            }
        }
        !self.broken
    }
}

impl<R: Read + Send, W: Write + Send> tree::Feed for Receiving<'_, R, W> {
    fn request(&mut self, files: &[RelPath]) -> io::Result<()> {
        let sent = match &self.ask {
            Ask::Agent(at) => write_frame(
                self.w,
                &super::Request::SendFiles {
                    at: at.clone(),
                    files: files.to_vec(),
                },
            ),
            Ask::Host => write_frame(self.w, &super::Reply::Want(files.to_vec())),
        };
        if let Err(e) = sent {
            return Err(self.lost(e.to_string()));
        }
        self.asked = true;
        self.pending = files.len();
        Ok(())
    }

    fn next(
        &mut self,
        path: &RelPath,
        dst: &std::fs::File,
        written: &mut dyn FnMut(u64) -> io::Result<()>,
    ) -> io::Result<Fetched> {
        if self.over || self.pending == 0 {
            return Err(io::Error::other("the sender sends nothing more"));
        }
        let (meta, xattrs) = match self.chunk()? {
            Chunk::File {
                path: p,
                meta,
                xattrs,
            } if p == *path => (meta, xattrs),
            Chunk::Failed { error, .. } => {
                self.over = true;
                return Err(io::Error::other(error));
            }
            other => {
                return Err(self.lost(format!(
                    "the sender sent {other:?} where {path} should start"
                )));
            }
        };
        self.pending -= 1;
        self.in_file = true;
        let mut sink = digest::Sink::new(dst, meta.size);
        loop {
            match self.chunk()? {
                Chunk::Block { index, len } => {
                    self.raw(len)?;
                    written(u64::from(len))?;
                    sink.block(index, &self.buf)?;
                }
                Chunk::End { digest } => {
                    self.in_file = false;
                    let ours = sink.finish()?;
                    if ours != digest {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "what arrived has the digest {ours}, but the sender read {digest}: \
                                 the bytes were changed on the way"
                            ),
                        ));
                    }
                    return Ok(Fetched {
                        meta,
                        xattrs,
                        digest: ours,
                    });
                }
                Chunk::Failed { error, .. } => {
                    self.in_file = false;
                    self.over = true;
                    return Err(io::Error::other(error));
                }
                other => {
                    return Err(
                        self.lost(format!("the sender sent {other:?} in the middle of {path}"))
                    );
                }
            }
        }
    }
}
