//! Memory budget of `verify`: what a run will need, estimated before the large
//! allocations, against what the process may still use. A run that would not
//! fit ends with [`ExecError::TooLarge`] naming the figures and the knob that
//! helps, instead of being killed by the kernel.
//!
//! The estimate (see [`Estimate`]) is measured, not modelled: the activation
//! bytes per sample come from one untracked batch-1 pass over the real graph
//! ([`Executor::activation_bytes`]); a training step keeps about that much per
//! sample alive for the backward, plus candle's own intermediates of composed
//! ops and the gradients in flight, covered by [`BACKWARD_FACTOR`] (checked on
//! the real models of README "`reinit verify` on real models"; conservative
//! for most: ResNet-50 needs 2.6 of the 6).

use std::collections::HashMap;

use candle_core::Tensor;

use crate::error::ExecError;
use crate::executor::Executor;

/// Peak memory of a convolutional net's run over the activation bytes its
/// batch computes: the forward's values kept for the backward, the gradients
/// and candle's intermediates in flight, the probes' VJPs and what glibc
/// keeps between them. Measured (peak − task data − weights) / (activations
/// × batch) at batch 2: ResNet-50 2.6, the 224 MobileNet fixture 2.4,
/// SqueezeNet 6.0.
pub const BACKWARD_FACTOR: f64 = 6.0;

/// The same for a graph whose activations come from matrix products,
/// attention and elementwise ops (transformers, MLPs): ViT-B/16 needs 2.0
/// (README "`reinit verify` on real models"); 3 leaves room for the address
/// space glibc's thread arenas reserve beyond the resident set.
pub const DENSE_BACKWARD_FACTOR: f64 = 3.0;

/// Below this share of spatial activation bytes (convolutions, pooling,
/// BN, LRN) a graph counts as dense: ViT-B/16's patch embedding is 0.1 %,
/// the CNNs' convolutions and pools alone are over a third.
pub const SPATIAL_SHARE: f64 = 0.05;

/// What the process may still allocate, and where that bound comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Available {
    pub bytes: u64,
    pub source: &'static str,
}

/// The tightest of: `REINIT_MEMORY_LIMIT` (bytes, or with a K/M/G suffix; a
/// budget for the whole process), the address-space limit (`ulimit -v`) less
/// what is mapped, the cgroup's `memory.max` less its usage, and the kernel's
/// `MemAvailable`.
pub fn available() -> Available {
    let mut best = Available {
        bytes: u64::MAX,
        source: "unbounded",
    };
    let mut offer = |bytes: Option<u64>, source: &'static str| {
        if let Some(b) = bytes.filter(|&b| b < best.bytes) {
            best = Available { bytes: b, source };
        }
    };
    let rss = proc_status_kib("VmRSS").map(|k| k * 1024).unwrap_or(0);
    if let Ok(v) = std::env::var("REINIT_MEMORY_LIMIT") {
        offer(
            parse_size(&v).map(|b| b.saturating_sub(rss)),
            "REINIT_MEMORY_LIMIT",
        );
    }
    let mapped = proc_status_kib("VmSize").map(|k| k * 1024).unwrap_or(0);
    offer(
        address_space_limit().map(|l| l.saturating_sub(mapped)),
        "the address-space limit (ulimit -v)",
    );
    offer(cgroup_room(), "the cgroup's memory.max");
    offer(
        meminfo_kib("MemAvailable").map(|k| k * 1024),
        "MemAvailable",
    );
    best
}

/// `123`, `64K`, `512M`, `4G` (powers of 1024; `GiB`/`GB` forms too).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.trim().parse().ok()?;
    let scale = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches(['B', 'I'])
    {
        "" => 1u64,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    (value.is_finite() && value >= 0.0).then_some((value * scale as f64) as u64)
}

fn proc_status_kib(key: &str) -> Option<u64> {
    field_kib(&std::fs::read_to_string("/proc/self/status").ok()?, key)
}

fn meminfo_kib(key: &str) -> Option<u64> {
    field_kib(&std::fs::read_to_string("/proc/meminfo").ok()?, key)
}

fn field_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

fn address_space_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn cgroup_room() -> Option<u64> {
    let read = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?;
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// Peak resident set of this process so far (`VmHWM`), in bytes.
pub fn peak_rss() -> Option<u64> {
    proc_status_kib("VmHWM").map(|k| k * 1024)
}

/// With `REINIT_DEBUG_MEMORY` set, one stderr line per call: where the run
/// is (`phase`) and the process's resident set there (`VmRSS`, split into
/// anonymous memory and mapped file pages), its peak so far (`VmHWM`) and
/// its address space (`VmSize`, what `ulimit -v` bounds). For finding where
/// a model's memory goes (README "`reinit verify` on real models"); silent
/// otherwise.
pub fn debug_phase(phase: &str) {
    if std::env::var_os("REINIT_DEBUG_MEMORY").is_none() {
        return;
    }
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    let mib = |key: &str| field_kib(&status, key).map_or(0, |k| k / 1024);
    eprintln!(
        "memory: {phase}: rss {} MiB (anon {}, file {}), peak {} MiB, vmsize {} MiB{}",
        mib("VmRSS"),
        mib("RssAnon"),
        mib("RssFile"),
        mib("VmHWM"),
        mib("VmSize"),
        heap_in_use().map_or_else(String::new, |b| format!(", heap in use {} MiB", b >> 20)),
    );
}

/// Bytes glibc's allocator has handed out and not had back (`mallinfo2`:
/// arena blocks in use plus mmapped blocks); the rest of the anonymous
/// resident set is what it keeps for reuse.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> Option<u64> {
    #[repr(C)]
    struct MallInfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }
    unsafe extern "C" {
        fn mallinfo2() -> MallInfo2;
    }
    // SAFETY: glibc ≥ 2.33 exports `mallinfo2`, which only reads the
    // allocator's counters and returns them by value.
    let info = unsafe { mallinfo2() };
    Some((info.uordblks + info.hblkhd) as u64)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> Option<u64> {
    None
}

/// Hands the allocator's free memory back to the kernel (glibc's
/// `malloc_trim`; nothing elsewhere). Between phases whose tensors differ in
/// size (the Jacobian's passes, then the training steps) glibc otherwise
/// keeps the first phase's freed blocks, fragmented, under the second.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim takes the arenas' locks itself and only
        // returns free pages; any thread may call it at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Makes every thread allocate from glibc's main arena (`M_ARENA_MAX` = 1;
/// nothing elsewhere). `verify` runs on a rayon worker, and a worker's own
/// arena (64 MiB heaps) kept 376 MiB more of ViT-B/16 resident than the main
/// arena did (3.88 against 3.50 GiB peak). Threads that have allocated before
/// the call keep their arenas, so call it before the first parallel loop.
pub fn one_heap_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_ARENA_MAX: i32 = -8;
        // SAFETY: mallopt only sets an allocator parameter; glibc takes its
        // own lock.
        unsafe {
            mallopt(M_ARENA_MAX, 1);
        }
    }
}

/// A size for people: `1.5 GiB`, `300 MiB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.0} MiB", b / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

/// What one `verify` run adds to the process: optimizer state and gradients
/// for every trainable weight (3 copies: gradient, and two AdamW moments) and
/// the training step's activations at `batch`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub activation_bytes_per_sample: u64,
    /// The part of it spatial ops produce ([`SPATIAL_SHARE`]).
    pub spatial_bytes_per_sample: u64,
    pub batch: usize,
    pub weight_bytes: u64,
}

impl Estimate {
    /// Measures the activations of one sample of `inputs` (a batch of one).
    pub fn measure(
        exec: &Executor,
        one_sample: &HashMap<String, Tensor>,
        batch: usize,
    ) -> Result<Estimate, ExecError> {
        let weight_bytes = exec
            .params()
            .iter()
            .filter(|p| p.trainable)
            .map(|p| (p.var.elem_count() * p.var.dtype().size_in_bytes()) as u64)
            .sum();
        let profile = exec.activation_profile(one_sample)?;
        Ok(Estimate {
            activation_bytes_per_sample: profile.bytes,
            spatial_bytes_per_sample: profile.spatial_bytes,
            batch,
            weight_bytes,
        })
    }

    /// [`BACKWARD_FACTOR`] for a convolutional graph, [`DENSE_BACKWARD_FACTOR`]
    /// where spatial ops make less than [`SPATIAL_SHARE`] of the activations.
    pub fn backward_factor(&self) -> f64 {
        let spatial =
            self.spatial_bytes_per_sample as f64 / self.activation_bytes_per_sample.max(1) as f64;
        if spatial < SPATIAL_SHARE {
            DENSE_BACKWARD_FACTOR
        } else {
            BACKWARD_FACTOR
        }
    }

    pub fn step_bytes(&self) -> u64 {
        (self.activation_bytes_per_sample as f64 * self.batch as f64 * self.backward_factor())
            as u64
    }

    pub fn total(&self) -> u64 {
        self.step_bytes() + 3 * self.weight_bytes
    }

    /// The largest batch whose estimate fits in `bytes`.
    pub fn batch_fitting(&self, bytes: u64) -> usize {
        let room = bytes.saturating_sub(3 * self.weight_bytes) as f64;
        let per = self.activation_bytes_per_sample as f64 * self.backward_factor();
        if per <= 0.0 {
            usize::MAX
        } else {
            (room / per).floor() as usize
        }
    }

    /// `Err(TooLarge)` when the estimate exceeds what is [`available`].
    pub fn check(&self, avail: Available) -> Result<(), ExecError> {
        let need = self.total();
        if need <= avail.bytes {
            return Ok(());
        }
        let fits = self.batch_fitting(avail.bytes);
        let knob = if fits >= 1 {
            format!("use --batch {fits} or less, or a smaller --input-shape")
        } else {
            "even --batch 1 does not fit: give a smaller --input-shape".to_string()
        };
        Err(ExecError::TooLarge(format!(
            "a training step needs about {} ({} of activations per sample × batch {} × {} for \
             the backward, plus {} for gradients and optimizer state), but only {} is \
             available ({}); {knob}",
            human(need),
            human(self.activation_bytes_per_sample),
            self.batch,
            self.backward_factor(),
            human(3 * self.weight_bytes),
            human(avail.bytes),
            avail.source,
        )))
    }
}

/// `Err(TooLarge)` when `samples` inputs of `sample_bytes` each exceed what
/// is [`available`].
pub fn check_task_data(samples: usize, sample_bytes: u64) -> Result<(), ExecError> {
    let need = samples as u64 * sample_bytes;
    let avail = available();
    if need <= avail.bytes {
        return Ok(());
    }
    Err(ExecError::TooLarge(format!(
        "the task's {samples} samples of {} need about {}, but only {} is available ({}); \
         give a smaller --input-shape",
        human(sample_bytes),
        human(need),
        human(avail.bytes),
        avail.source,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("4G"), Some(4 << 30));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("1.5 GB"), Some(3 << 29));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1G"), None);
    }

    #[test]
    fn the_refusal_names_the_size_and_a_batch_that_fits() {
        let e = Estimate {
            activation_bytes_per_sample: 100 << 20,
            spatial_bytes_per_sample: 50 << 20,
            batch: 64,
            weight_bytes: 10 << 20,
        };
        // 64 × 100 MiB × 6 + 30 MiB
        assert_eq!(e.total(), (38400 << 20) + (30 << 20));
        let avail = Available {
            bytes: 1 << 30,
            source: "test",
        };
        let msg = e.check(avail).unwrap_err().to_string();
        assert!(msg.contains("37.5 GiB"), "{msg}");
        // (1024 − 30) / 600 = 1.66 → 1
        assert!(msg.contains("--batch 1 or less"), "{msg}");
        assert!(
            e.check(Available {
                bytes: u64::MAX,
                source: "x"
            })
            .is_ok()
        );
    }
}
