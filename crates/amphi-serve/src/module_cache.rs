//! The precompiled-module cache, and why it is trusted.
//!
//! A `.cwasm` is native machine code: `Module::deserialize` maps it executable and the server runs
//! it with its own privileges; wasmtime cannot check that it came from `Module::serialize`.
//! Whoever can write the file, or the folder it lies in (to put another file in its place), can
//! run code in the server. A cached module is therefore loaded only when
//! - the cache folder is owned by the user running the server, is not a symbolic link and is not
//!   writable by group or others, and no folder above it lets another user (other than root)
//!   rename it (owned by this user or root; group/world-writable only with the sticky bit);
//! - the `.cwasm` file, and its `.cwasm.sha256` beside it, are regular files owned by this user
//!   and not writable by group or others (checked on the opened handle, not by path);
//! - the file's sha256 equals the sidecar's. This is integrity (a torn, truncated or mixed-up
//!   write is never run), not authenticity: anyone able to rewrite the `.cwasm` could rewrite the
//!   sidecar too, which the ownership checks above rule out;
//! - its name is the sha256 of (the artifact's sha256, wasmtime's version, the target, the
//!   engine's precompile-compatibility hash, this host's config), so a module compiled from
//!   another artifact or for another engine is never picked up.
//!
//! The bytes are read once, checked, and deserialized from memory, so the file cannot be swapped
//! between the check and the load. Anything else is compiled from the artifact (and an untrusted
//! folder is never written to). There is no fallback to a shared temporary folder: without a
//! cache folder ([`crate::default_cache_dir`]), modules are compiled at every start.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

use crate::error::Error;
use crate::runtime::Artifact;

/// wasmtime's version (pinned in Cargo.toml), part of the module cache key.
const WASMTIME_VERSION: &str = "48.0.8";

/// `Hash` into sha256: stable across processes and Rust versions, unlike `DefaultHasher`.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0 // unused: the digest is read from the inner hasher
    }
}

pub(crate) fn cache_key(engine: &Engine, artifact: &Artifact, preempt: bool) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.write(b"amphi-cwasm-v2\0");
    hasher.write(artifact.sha256.as_bytes());
    hasher.write(WASMTIME_VERSION.as_bytes());
    hasher.write(std::env::consts::ARCH.as_bytes());
    hasher.write(std::env::consts::OS.as_bytes());
    hasher.write(&[u8::from(preempt)]);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(hasher.0.finalize())
}

#[cfg(unix)]
mod ids {
    // SAFETY: `geteuid` takes no arguments, cannot fail and touches no memory of ours; `uid_t`
    // is a 32-bit unsigned integer on every Unix Rust supports.
    unsafe extern "C" {
        safe fn geteuid() -> u32;
    }

    /// The effective user id of this process.
    pub(super) fn euid() -> u32 {
        geteuid()
    }
}

/// Why metadata cannot be trusted to guard native code (owner, mode), `None` when it can.
fn untrusted_meta(meta: &std::fs::Metadata) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = ids::euid();
        if meta.uid() != me {
            return Some(format!(
                "owned by uid {}, not by this user ({me})",
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Some(format!(
                "writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    None
}

/// Why the cache folder cannot be trusted, `None` when it can.
fn untrusted_dir(dir: &Path) -> Option<String> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    if meta.file_type().is_symlink() {
        return Some("a symbolic link".into());
    }
    if !meta.is_dir() {
        return Some("not a folder".into());
    }
    if let Some(why) = untrusted_meta(&meta) {
        return Some(why);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = ids::euid();
        let absolute = match std::fs::canonicalize(dir) {
            Ok(p) => p,
            Err(e) => return Some(e.to_string()),
        };
        for above in absolute.ancestors().skip(1) {
            let Ok(m) = std::fs::metadata(above) else {
                return Some(format!("{} cannot be read", above.display()));
            };
            let sticky = m.mode() & 0o1000 != 0;
            if (m.uid() != me && m.uid() != 0) || (m.mode() & 0o022 != 0 && !sticky) {
                return Some(format!(
                    "{} (uid {}, mode {:o}) lets another user replace it",
                    above.display(),
                    m.uid(),
                    m.mode() & 0o7777
                ));
            }
        }
    }
    None
}

/// Reads a cache file through one handle: its metadata checked on that handle, then its bytes.
fn read_trusted(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if let Some(why) = untrusted_meta(&meta) {
        return Err(why);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// A trusted folder of precompiled modules (see the trust model above).
#[derive(Debug)]
pub(crate) struct ModuleCache {
    dir: PathBuf,
}

impl ModuleCache {
    /// Creates the folder (0700) if needed; `None`, with a warning, when it is not trusted.
    pub(crate) fn open(dir: &Path) -> Option<Self> {
        if let Err(e) = crate::hub::create_private_dir(dir) {
            tracing::warn!(path = %dir.display(), error = %e, "module cache off: cannot create its folder");
            return None;
        }
        match untrusted_dir(dir) {
            None => Some(Self {
                dir: dir.to_path_buf(),
            }),
            Some(why) => {
                tracing::warn!(path = %dir.display(), reason = %why, "module cache off: the folder is not trusted");
                None
            }
        }
    }

    fn paths(&self, key: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{key}.cwasm")),
            self.dir.join(format!("{key}.cwasm.sha256")),
        )
    }

    /// The cached module for `key`, if present, trusted and intact.
    pub(crate) fn load(&self, engine: &Engine, key: &str) -> Option<Module> {
        let (path, sum) = self.paths(key);
        if std::fs::symlink_metadata(&path).is_err() {
            return None; // not cached yet
        }
        let checked = read_trusted(&path).and_then(|bytes| {
            let want = read_trusted(&sum).map_err(|e| format!("{}: {e}", sum.display()))?;
            let got = hex::encode(Sha256::digest(&bytes));
            match String::from_utf8_lossy(&want).trim() == got {
                true => Ok(bytes),
                false => Err(format!("sha256 {got} does not match {}", sum.display())),
            }
        });
        let bytes = match checked {
            Ok(b) => b,
            Err(why) => {
                tracing::warn!(path = %path.display(), reason = %why, "ignoring an untrusted precompiled module");
                return None;
            }
        };
        // SAFETY: these bytes were read from a file that only this user can write, in a folder
        // only this user can write, and match the sha256 written beside them by `store` below
        // (which writes `Module::serialize` output); the name keys the artifact and the exact
        // engine configuration. See the trust model above.
        match unsafe { Module::deserialize(engine, &bytes) } {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable precompiled module");
                None
            }
        }
    }

    /// Stores a serialized module atomically (unique temporary file, fsync, rename), then its
    /// sha256 beside it.
    pub(crate) fn store(&self, key: &str, bytes: &[u8]) -> Result<(), Error> {
        let (path, sum) = self.paths(key);
        let digest = hex::encode(Sha256::digest(bytes));
        crate::hub::write_atomically(&path, bytes).map_err(|source| Error::Cache {
            path: path.clone(),
            source,
        })?;
        crate::hub::write_atomically(&sum, format!("{digest}\n").as_bytes()).map_err(|source| {
            Error::Cache {
                path: sum.clone(),
                source,
            }
        })
    }
}
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{Artifact, ModuleCache, cache_key};
    use std::path::PathBuf;
    use wasmtime::{Engine, Module};

    /// The smallest valid module: the magic and the version.
    const EMPTY: &[u8] = b"\0asm\x01\0\0\0";

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("amphi-cwasm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn keys_cover_the_artifact_and_the_config() {
        let engine = Engine::default();
        let a = Artifact::from_bytes(EMPTY.to_vec());
        let b = Artifact::from_bytes(b"\0asm\x01\0\0\0\0".to_vec());
        let k = cache_key(&engine, &a, false);
        assert_eq!(k.len(), 64);
        assert_eq!(k, cache_key(&engine, &a, false), "stable");
        assert_ne!(k, cache_key(&engine, &b, false));
        assert_ne!(k, cache_key(&engine, &a, true));
    }

    #[cfg(unix)]
    #[test]
    fn only_private_intact_modules_are_loaded() {
        use std::os::unix::fs::PermissionsExt;
        let set_mode = |p: &std::path::Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        };
        let engine = Engine::default();
        let d = dir("trust");
        let cache = ModuleCache::open(&d).unwrap();
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let bytes = Module::new(&engine, EMPTY).unwrap().serialize().unwrap();
        cache.store("k", &bytes).unwrap();
        let (cwasm, sum) = cache.paths("k");
        assert_eq!(
            std::fs::metadata(&cwasm).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(cache.load(&engine, "k").is_some(), "a trusted module loads");
        assert!(cache.load(&engine, "other").is_none());

        // Group- or world-writable file: refused.
        set_mode(&cwasm, 0o666);
        assert!(cache.load(&engine, "k").is_none(), "world-writable .cwasm");
        set_mode(&cwasm, 0o600);
        assert!(cache.load(&engine, "k").is_some());

        // Content changed (same owner and mode): the sha256 no longer matches.
        let mut tampered = bytes.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        std::fs::write(&cwasm, &tampered).unwrap();
        assert!(cache.load(&engine, "k").is_none(), "tampered .cwasm");
        std::fs::write(&cwasm, &bytes).unwrap();
        assert!(cache.load(&engine, "k").is_some());

        // No sidecar: refused.
        std::fs::remove_file(&sum).unwrap();
        assert!(cache.load(&engine, "k").is_none(), "no sha256 beside it");
        cache.store("k", &bytes).unwrap();

        // Another owner (needs root to create the case).
        if super::ids::euid() == 0 {
            std::os::unix::fs::chown(&cwasm, Some(65534), None).unwrap();
            assert!(cache.load(&engine, "k").is_none(), "owned by someone else");
            std::os::unix::fs::chown(&cwasm, Some(0), None).unwrap();
            assert!(cache.load(&engine, "k").is_some());
            std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
            assert!(
                ModuleCache::open(&d).is_none(),
                "folder owned by someone else"
            );
            std::os::unix::fs::chown(&d, Some(0), None).unwrap();
        }

        // A group/world-writable folder, or a symbolic link to one: the cache is off.
        set_mode(&d, 0o777);
        assert!(ModuleCache::open(&d).is_none(), "world-writable folder");
        set_mode(&d, 0o700);
        let link = dir("trust-link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(ModuleCache::open(&link).is_none(), "symbolic link");
        // A folder under a world-writable, non-sticky parent: someone else could swap it.
        let open_parent = dir("trust-parent");
        std::fs::create_dir_all(open_parent.join("wasm")).unwrap();
        set_mode(&open_parent, 0o777);
        assert!(ModuleCache::open(&open_parent.join("wasm")).is_none());
        assert!(ModuleCache::open(&d).is_some());
        for p in [&d, &open_parent] {
            let _ = std::fs::remove_dir_all(p);
        }
        let _ = std::fs::remove_file(&link);
    }
}
