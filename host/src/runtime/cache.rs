//! Compiled components on disk, so a CLI call does not recompile a plugin every time.
//!
//! A cache file is named after the component's SHA-256 and wasmtime's compatibility hash of the
//! engine (version, target, settings). It is written to a temporary file and renamed into place,
//! so a reader never sees half a file; one that cannot be loaded is compiled again and replaced.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components are kept.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

/// How a component was obtained, for diagnostics and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache.
    Hit,
    /// Compiled and stored.
    Compiled,
    /// The cached file was unreadable; compiled again and replaced.
    Rebuilt,
    /// Compiled, but the cache could not be written (the reason is logged).
    Uncached,
}

impl CompileCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache { dir: dir.into() }
    }

    /// The file a component compiled by `engine` is cached in.
    pub fn entry(&self, engine: &Engine, sha256: &str) -> PathBuf {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        self.dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
    }

    /// Loads the compiled form of `bytes`, compiling and storing it when needed.
    pub fn load(
        &self,
        engine: &Engine,
        sha256: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let entry = self.entry(engine, sha256);
        let mut outcome = CacheOutcome::Compiled;
        // The entry is read into memory rather than mapped: a file truncated under a mapping
        // would kill the process with SIGBUS, and the host must survive a damaged cache.
        if let Ok(cached) = std::fs::read(&entry) {
            // SAFETY: files in the cache directory are only ever written by `store` below, from
            // wasmtime's own precompilation, and named after the engine's compatibility hash;
            // wasmtime additionally checks the header and refuses incompatible artifacts.
            match unsafe { Component::deserialize(engine, &cached) } {
                Ok(c) => return Ok((c, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(
                        "compile cache entry {} unusable ({e}); rebuilding",
                        entry.display()
                    );
                    outcome = CacheOutcome::Rebuilt;
                }
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        if let Err(e) = self.store(&entry, &compiled) {
            tracing::warn!("cannot write compile cache {}: {e}", entry.display());
            outcome = CacheOutcome::Uncached;
        }
        // SAFETY: `compiled` was produced just now by this engine's `precompile_component`.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, outcome))
    }

    fn store(&self, entry: &Path, compiled: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(compiled)?;
        tmp.as_file().sync_all()?;
        tmp.persist(entry).map_err(|e| e.error)?;
        Ok(())
    }
}
