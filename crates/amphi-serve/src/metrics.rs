//! Prometheus text exposition of the host's counters (no registry crate: a handful of series).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::pool::PoolStats;

const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Series {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    errors: BTreeMap<String, u64>,
    tokens: u64,
}

/// Request counters, latency histograms and error counts.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<Series>,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    connections_refused: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Records one finished request.
    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        let Ok(mut s) = self.series.lock() else {
            return;
        };
        *s.requests.entry((route.to_owned(), status)).or_default() += 1;
        let h = s.latency.entry(route.to_owned()).or_default();
        let secs = elapsed.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// Records an error response by its code.
    pub fn error(&self, code: &str) {
        if let Ok(mut s) = self.series.lock() {
            *s.errors.entry(code.to_owned()).or_default() += 1;
        }
    }

    /// A connection was accepted and is being served.
    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A served connection ended.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection over the cap was answered 503 and closed.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections being served now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// Records tokens processed.
    pub fn tokens(&self, n: usize) {
        if let Ok(mut s) = self.series.lock() {
            s.tokens += n as u64;
        }
    }

    /// The exposition text.
    pub fn render(&self, pool: PoolStats, info: &[(&str, &str)]) -> String {
        let mut out = String::new();
        let Ok(s) = self.series.lock() else {
            return out;
        };
        let labels = info
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        let _ = writeln!(
            out,
            "# HELP amphi_info The artifact and device this host runs."
        );
        let _ = writeln!(out, "# TYPE amphi_info gauge\namphi_info{{{labels}}} 1");

        let _ = writeln!(
            out,
            "# HELP amphi_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE amphi_requests_total counter");
        for ((route, status), n) in &s.requests {
            let _ = writeln!(
                out,
                "amphi_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }

        let _ = writeln!(
            out,
            "# HELP amphi_request_duration_seconds Request latency."
        );
        let _ = writeln!(out, "# TYPE amphi_request_duration_seconds histogram");
        for (route, h) in &s.latency {
            let route = escape(route);
            for (le, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "amphi_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "amphi_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "amphi_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "amphi_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }

        let _ = writeln!(out, "# HELP amphi_errors_total Error responses by code.");
        let _ = writeln!(out, "# TYPE amphi_errors_total counter");
        for (code, n) in &s.errors {
            let _ = writeln!(out, "amphi_errors_total{{code=\"{}\"}} {n}", escape(code));
        }

        let _ = writeln!(out, "# HELP amphi_tokens_total Tokens processed.");
        let _ = writeln!(
            out,
            "# TYPE amphi_tokens_total counter\namphi_tokens_total {}",
            s.tokens
        );

        let _ = writeln!(
            out,
            "# HELP amphi_connections Connections being served.\n# TYPE amphi_connections gauge\n\
             amphi_connections {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP amphi_connections_total Connections by outcome: served, or refused at the cap.\n\
             # TYPE amphi_connections_total counter\n\
             amphi_connections_total{{outcome=\"served\"}} {}\n\
             amphi_connections_total{{outcome=\"refused\"}} {}",
            self.connections_total.load(Ordering::Relaxed),
            self.connections_refused.load(Ordering::Relaxed)
        );

        let _ = writeln!(out, "# HELP amphi_instances wasm instances by state.");
        let _ = writeln!(out, "# TYPE amphi_instances gauge");
        let _ = writeln!(out, "amphi_instances{{state=\"idle\"}} {}", pool.idle);
        let _ = writeln!(
            out,
            "amphi_instances{{state=\"busy\"}} {}",
            pool.size.saturating_sub(pool.idle)
        );
        let _ = writeln!(
            out,
            "# HELP amphi_requests_in_flight Requests running or waiting."
        );
        let _ = writeln!(
            out,
            "# TYPE amphi_requests_in_flight gauge\namphi_requests_in_flight {}",
            pool.in_flight
        );
        let _ = writeln!(
            out,
            "# HELP amphi_instance_restarts_total Instances replaced after a trap."
        );
        let _ = writeln!(
            out,
            "# TYPE amphi_instance_restarts_total counter\namphi_instance_restarts_total {}",
            pool.restarts
        );
        out
    }
}
