//! Per-value cost of stream v2's bulk laws as **thread CPU time**
//! (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`, Linux), so that the figure holds on a loaded machine where the
//! criterion bench's wall time does not: the values are drawn on this thread
//! ([`IidFill::fill_range`]), the laws interleaved round by round.
//!
//! `cargo run --release -p reinit-schemes --example fill_cputime [-- ROUNDS [LAW]]`
//! (LAW: `normal`, `uniform` or `truncated_normal`; all three by default)
//!
//! Two sizes per law: 4M values (32 MiB of f64 output, as criterion's `normal_fill`,
//! so the stores go to memory) and 16K values (128 KiB, cache-resident: generation alone).
//! Prints the median and the minimum over the rounds, in ns per value.

use reinit_schemes::{Law, Stream, StreamVersion};
use std::hint::black_box;

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

unsafe extern "C" {
    /// The C library's (std links it on Linux); `/proc/thread-self/schedstat` would be
    /// simpler but only advances at scheduler ticks (4 ms) while the thread runs.
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// Nanoseconds this thread has run.
fn thread_cpu_ns() -> u64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid timespec (two 64-bit fields on x86-64 / aarch64 Linux)
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.sec as u64 * 1_000_000_000 + ts.nsec as u64
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|r| r.parse().expect("ROUNDS is a number"))
        .unwrap_or(15);
    let only = std::env::args().nth(2);
    let laws: Vec<_> = [
        ("normal", Law::Normal { std: 1.0 }),
        ("uniform", Law::Uniform { lo: -1.0, hi: 1.0 }),
        ("truncated_normal", Law::TruncatedNormal { std: 1.0 }),
    ]
    .into_iter()
    .filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name))
    .collect();
    assert!(!laws.is_empty(), "unknown LAW {only:?}");
    let sizes = [1usize << 22, 1 << 14];
    let mut out = vec![0.0f64; sizes[0]];
    // case = (law, size); samples[case] = ns per value of each round
    let mut samples = vec![Vec::new(); laws.len() * sizes.len()];
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_before = load();
    for round in 0..=rounds {
        for (li, (_, law)) in laws.iter().enumerate() {
            for (si, &n) in sizes.iter().enumerate() {
                let fill = Stream::versioned(StreamVersion::V2, 1, "w", "he").iid(*law, n);
                // small buffers: repeat to a comparable amount of work
                let reps = sizes[0] / n;
                let t0 = thread_cpu_ns();
                for _ in 0..reps {
                    fill.fill_range(0, black_box(&mut out[..n]));
                }
                let dt = thread_cpu_ns() - t0;
                if round > 0 {
                    // round 0 warms up (page faults of the output, caches)
                    samples[li * sizes.len() + si].push(dt as f64 / (reps * n) as f64);
                }
            }
        }
    }
    println!(
        "stream v2, thread CPU ns per value, {rounds} rounds; loadavg before: {} after: {}",
        load_before.trim(),
        load().trim()
    );
    for (li, (name, _)) in laws.iter().enumerate() {
        for (si, &n) in sizes.iter().enumerate() {
            let s = &mut samples[li * sizes.len() + si];
            s.sort_by(f64::total_cmp);
            println!(
                "{name:>17} {:>5}: median {:.3}  min {:.3}",
                if n >= 1 << 20 {
                    format!("{}M", n >> 20)
                } else {
                    format!("{}K", n >> 10)
                },
                s[s.len() / 2],
                s[0]
            );
        }
    }
}
