//! What the targets share: a reader that turns fuzz bytes into decisions, and where the
//! fixtures and the artifact live.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Reads the input front to back; zeros (and empty slices) once it is used up.
#[derive(Debug)]
pub(crate) struct Input<'a>(pub(crate) &'a [u8]);

impl<'a> Input<'a> {
    pub(crate) fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// A length-prefixed chunk: one length byte (0..=239), or 240..=255 followed by a `u16`.
    pub(crate) fn chunk(&mut self) -> &'a [u8] {
        let n = match self.u8() {
            n @ 0..=239 => usize::from(n),
            _ => usize::from(self.u16()),
        };
        self.take(n)
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }

    /// One of `items`, chosen by the next byte.
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.u8()) % items.len()]
    }
}

/// The repository root (this crate is `crates/amphi-fuzz`).
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shared fixtures: `$AMPHI_FIXTURES`, else `../shared/fixtures` beside the repository (as
/// the workspace tests find them).
pub(crate) fn fixtures() -> PathBuf {
    std::env::var_os("AMPHI_FIXTURES")
        .filter(|v| !v.is_empty())
        .map_or_else(|| repo_root().join("../shared/fixtures"), PathBuf::from)
}

/// A tiny model folder of the fixtures.
pub(crate) fn fixture_model(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// `amphi.wasm`: `$AMPHI_ARTIFACT`, else `<repo>/target/amphi.wasm`. Panics (the target cannot
/// run at all) with the command that builds it when it is missing.
pub(crate) fn artifact() -> PathBuf {
    let path = std::env::var_os("AMPHI_ARTIFACT")
        .filter(|v| !v.is_empty())
        .map_or_else(|| repo_root().join("target/amphi.wasm"), PathBuf::from);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo xtask artifact` (or point AMPHI_ARTIFACT at one)",
        path.display()
    );
    path
}

/// Where precompiled modules are cached between runs (a private folder under `target/`), so
/// that only the first process compiles `amphi.wasm`.
pub(crate) fn module_cache() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| repo_root().join("target"), PathBuf::from)
        .join("amphi-fuzz/cwasm")
}

/// Locks a mutex even if an earlier input panicked while holding it (the replay test catches
/// panics and goes on; each target leaves its state consistent before it panics).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
