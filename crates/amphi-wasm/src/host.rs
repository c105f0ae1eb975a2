//! The `amphi_host` import module: the only functions the artifact imports besides `amphi_gpu`.
//!
//! | import | signature | what the host does |
//! |---|---|---|
//! | `random_fill` | `(ptr: i32, len: i32) -> i32` | fill guest memory with random bytes; 0 = ok |
//! | `log` | `(level: i32, ptr: i32, len: i32)` | record a UTF-8 message; 0 error, 1 warn, 2 info, 3 debug |
//! | `interrupted` | `() -> i32` | non-zero: stop the current call (its deadline passed); asked between ops (ABI v4) |
//!
//! Randomness reaches dependencies through getrandom's `custom` backend (selected for wasm32 in
//! `.cargo/config.toml`): tokenizers seeds its hash maps (ahash) from it once.

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "amphi_host")]
unsafe extern "C" {
    fn random_fill(ptr: *mut u8, len: usize) -> i32;
    fn log(level: i32, ptr: *const u8, len: usize);
    fn interrupted() -> i32;
}

/// Whether the host wants the current call stopped ([`amphi_core::set_interrupt_check`]).
#[cfg(target_arch = "wasm32")]
fn host_says_stop() -> bool {
    // SAFETY: an import without arguments.
    unsafe { interrupted() != 0 }
}

/// Native builds have no host to ask.
#[cfg(not(target_arch = "wasm32"))]
fn host_says_stop() -> bool {
    false
}

/// Log levels of the `log` import.
#[derive(Debug, Clone, Copy)]
#[repr(i32)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

/// Sends a message to the host's log.
#[cfg(target_arch = "wasm32")]
pub fn log_message(level: Level, message: &str) {
    // SAFETY: the pointer and length describe a live string for the duration of the call.
    unsafe { log(level as i32, message.as_ptr(), message.len()) }
}

/// Sends a message to the host's log (native builds: stderr).
#[cfg(not(target_arch = "wasm32"))]
pub fn log_message(level: Level, message: &str) {
    let _ = (level, message);
}

/// Installs (once) a panic hook that logs the panic message through the host before the module
/// traps (`panic = "abort"`), so the host can report what went wrong, and the engine's check
/// between ops, which asks the host's `interrupted`.
pub fn install_hooks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        amphi_core::set_interrupt_check(host_says_stop);
        std::panic::set_hook(Box::new(|info| {
            log_message(Level::Error, &format!("amphi.wasm panicked: {info}"));
        }));
    });
}

/// getrandom 0.3's custom backend. getrandom 0.4's custom backend links to the same symbol; the
/// engine never calls it at run time (see `patches/README.md`).
///
/// # Safety
/// `dest` must be valid for `len` bytes.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
unsafe extern "Rust" fn __getrandom_v03_custom(
    dest: *mut u8,
    len: usize,
) -> Result<(), getrandom03::Error> {
    // SAFETY: getrandom guarantees `dest` is valid for `len` bytes.
    match unsafe { random_fill(dest, len) } {
        0 => Ok(()),
        _ => Err(getrandom03::Error::UNSUPPORTED),
    }
}
