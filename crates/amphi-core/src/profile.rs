//! Where a forward pass spends its time, op by op: wall time per CPU-backend op and for
//! tokenization, summed over the calls made on this thread between [`start`] and [`finish`]
//! (`amphi bench --profile`). A diagnostic for native builds; on wasm32 (no clock without host
//! imports) both are no-ops and [`finish`] returns nothing.

/// Total wall time and number of calls of one op.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    /// The op (`matmul`, `attention`, `tokenize`, …).
    pub op: &'static str,
    /// Milliseconds, summed over the calls.
    pub ms: f64,
    /// Calls.
    pub calls: u64,
}

pub(crate) use imp::timed;
pub use imp::{finish, start};

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use super::OpTime;

    thread_local! {
        static OPS: RefCell<Option<BTreeMap<&'static str, (Duration, u64)>>> =
            const { RefCell::new(None) };
    }

    /// Starts (or restarts) collecting op times on this thread.
    pub fn start() {
        OPS.with(|o| *o.borrow_mut() = Some(BTreeMap::new()));
    }

    /// Stops collecting; the op times since [`start`], slowest first.
    pub fn finish() -> Vec<OpTime> {
        let ops = OPS.with(|o| o.borrow_mut().take()).unwrap_or_default();
        let mut out: Vec<OpTime> = ops
            .into_iter()
            .map(|(op, (d, calls))| OpTime {
                op,
                ms: d.as_secs_f64() * 1e3,
                calls,
            })
            .collect();
        out.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        out
    }

    /// Runs `f`, adding its wall time to `op` while collecting.
    pub(crate) fn timed<T>(op: &'static str, f: impl FnOnce() -> T) -> T {
        if OPS.with(|o| o.borrow().is_none()) {
            return f();
        }
        let t = Instant::now();
        let out = f();
        let d = t.elapsed();
        OPS.with(|o| {
            if let Some(ops) = o.borrow_mut().as_mut() {
                let e = ops.entry(op).or_default();
                e.0 += d;
                e.1 += 1;
            }
        });
        out
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::OpTime;

    /// No clock here: nothing is collected.
    pub fn start() {}

    /// Always empty on wasm32.
    pub fn finish() -> Vec<OpTime> {
        Vec::new()
    }

    pub(crate) fn timed<T>(_op: &'static str, f: impl FnOnce() -> T) -> T {
        f()
    }
}
