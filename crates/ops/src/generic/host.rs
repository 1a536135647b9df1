//! What the generic path costs the host: the time our ops spend preparing a call (validating
//! shapes, looking up a table) outside dfdx's kernels, and the bytes they upload, counted
//! process-wide so that a benchmark can read them per training step (`cargo xtask bench
//! models --generic`).
//!
//! The only upload is a convolution geometry's gather table, once ([`super::tables`]); the
//! test below reads the other files of the module to keep it so. dfdx's own kernels are not
//! counted here: several of them (gather, slice, strided reshape, concat, reductions, strided
//! elementwise ops) copy their few dims and strides (under 200 bytes) to the device at every
//! launch, whatever the activation size.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

static HOST_NS: AtomicU64 = AtomicU64::new(0);
static UPLOADED: AtomicU64 = AtomicU64::new(0);

/// Host-side cost of the generic ops since the last [`take`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostCost {
    /// Milliseconds spent preparing calls on the host (outside dfdx's kernels).
    pub host_ms: f64,
    /// Bytes the ops uploaded to the device (gather tables).
    pub uploaded_bytes: u64,
}

/// Returns the cost counted since the last call and resets the counters.
pub fn take() -> HostCost {
    HostCost {
        host_ms: HOST_NS.swap(0, Relaxed) as f64 * 1e-6,
        uploaded_bytes: UPLOADED.swap(0, Relaxed),
    }
}

/// Runs `f` (host-side preparation of an op call) and counts its time.
pub(crate) fn plan<R>(f: impl FnOnce() -> R) -> R {
    let t = Instant::now();
    let r = f();
    HOST_NS.fetch_add(t.elapsed().as_nanos() as u64, Relaxed);
    r
}

/// Counts `bytes` uploaded by an op.
pub(crate) fn uploaded(bytes: usize) {
    UPLOADED.fetch_add(bytes as u64, Relaxed);
}

/// Serialises the unit tests that read the process-wide counters.
#[cfg(test)]
pub(crate) static COUNTERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    /// Host data reaches the device through these dfdx and cudarc calls; only the table cache
    /// may use them (and it counts what it uploads).
    const UPLOADS: &[&str] = &["tensor_from_vec", "tensor(", "htod", "copy_from("];

    #[test]
    fn only_the_table_cache_uploads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/generic");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            // This file names the calls, and the cache is the one uploader.
            let code = text.split("#[cfg(test)]").next().unwrap();
            let uploader = path.ends_with("tables.rs");
            for call in UPLOADS {
                assert!(
                    uploader || !code.contains(call),
                    "{} calls `{call}`: only the table cache may upload host data",
                    path.display()
                );
            }
            if uploader {
                assert!(
                    code.contains("host::uploaded("),
                    "tables.rs must count its uploads"
                );
            }
            read += 1;
        }
        assert!(
            read >= 5,
            "expected the generic module's files in {}",
            dir.display()
        );
    }

    #[test]
    fn plan_counts_its_time_and_take_resets() {
        let _lock = super::COUNTERS.lock();
        super::take();
        let v = super::plan(|| {
            std::thread::sleep(std::time::Duration::from_millis(3));
            7
        });
        assert_eq!(v, 7);
        super::uploaded(5);
        let c = super::take();
        assert!(c.host_ms >= 3.0, "{} ms counted for a 3 ms plan", c.host_ms);
        assert!(c.uploaded_bytes >= 5);
        assert!(super::take().host_ms < 1.0, "take resets the count");
    }
}
