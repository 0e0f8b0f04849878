//! The report of a run: one entry per weight with before/after statistics,
//! what was kept and why. Serialized as the `--json` document.

use reinit_onnx::DType;
use serde::Serialize;

use crate::plan::Kept;

/// Mean, standard deviation and density (fraction of non-zeros) of a tensor.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Stats {
    pub mean: f64,
    pub std: f64,
    pub density: f64,
}

impl Stats {
    pub fn of(values: &[f64]) -> Stats {
        let mut acc = StatsAcc::default();
        acc.push(values);
        acc.finish()
    }

    /// Statistics of a stored tensor, read piece by piece (a large external
    /// tensor is never materialized as f64 for this); the blocks of a piece
    /// are summarized in parallel straight from the stored bytes.
    pub fn of_tensor(
        model: &reinit_onnx::Model,
        id: reinit_onnx::TensorId,
    ) -> Result<Stats, reinit_onnx::Error> {
        use rayon::prelude::*;
        let dtype = model.tensor(id).dtype;
        let block_bytes = STATS_BLOCK * dtype.size().unwrap_or(1);
        let mut acc = StatsAcc::default();
        let raw = model.visit_le(id, 16 * STATS_BLOCK, |piece| {
            let blocks = piece
                .par_chunks(block_bytes)
                .map(|block| StatsAcc::block_le(block, dtype))
                .collect::<Result<Vec<_>, String>>()?;
            blocks.into_iter().for_each(|b| acc.merge(b));
            Ok(())
        })?;
        if !raw {
            acc.push(&model.read_f64(id)?);
        }
        Ok(acc.finish())
    }
}

/// Statistics accumulated over fixed 65,536-value blocks, counted from the
/// start of each pushed slice and merged in order (Chan et al.'s pairwise
/// update). Each block is shifted by its first value so the variance keeps
/// its precision far from zero. The blocks are computed in parallel; since
/// the partition and the merge order are fixed, the result does not depend on
/// the thread count, nor on how a tensor is pushed as long as every push but
/// the last is a whole number of blocks (streamed batches and the piecewise
/// reads are).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StatsAcc {
    n: usize,
    mean: f64,
    /// Sum of squared deviations from `mean`.
    m2: f64,
    nonzero: usize,
}

pub(crate) const STATS_BLOCK: usize = 1 << 16;

impl StatsAcc {
    pub(crate) fn push(&mut self, values: &[f64]) {
        use rayon::prelude::*;
        let blocks: Vec<StatsAcc> = if values.len() > 4 * STATS_BLOCK {
            values.par_chunks(STATS_BLOCK).map(Self::block).collect()
        } else {
            values.chunks(STATS_BLOCK).map(Self::block).collect()
        };
        for b in blocks {
            self.merge(b);
        }
    }

    /// The statistics of one block (at most 65,536 values).
    pub(crate) fn block(values: &[f64]) -> StatsAcc {
        let mut sums = BlockSums::new(values.first().copied().unwrap_or(0.0));
        sums.add(values);
        sums.finish()
    }

    /// The statistics of one block stored as little-endian `dtype` values:
    /// equal to [`StatsAcc::block`] on the decoded values, without decoding
    /// the block into a buffer first.
    pub(crate) fn block_le(bytes: &[u8], dtype: DType) -> Result<StatsAcc, String> {
        let size = dtype
            .size()
            .ok_or_else(|| format!("cannot read {dtype} values"))?;
        let mut piece = [0.0; 64];
        let mut sums = None;
        for raw in bytes.chunks(piece.len() * size) {
            let piece = &mut piece[..raw.len() / size];
            dtype.read_le(raw, piece)?;
            sums.get_or_insert_with(|| BlockSums::new(piece[0]))
                .add(piece);
        }
        Ok(sums.map_or_else(StatsAcc::default, BlockSums::finish))
    }

    /// Appends the statistics of the values that follow.
    pub(crate) fn merge(&mut self, b: StatsAcc) {
        if b.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = b;
            return;
        }
        let (na, nb) = (self.n as f64, b.n as f64);
        let n = na + nb;
        let delta = b.mean - self.mean;
        self.mean += delta * nb / n;
        self.m2 += b.m2 + delta * delta * na * nb / n;
        self.n += b.n;
        self.nonzero += b.nonzero;
    }

    pub(crate) fn finish(self) -> Stats {
        let n = self.n.max(1) as f64;
        Stats {
            mean: self.mean,
            std: (self.m2 / n).max(0.0).sqrt(),
            density: self.nonzero as f64 / n,
        }
    }
}

/// The running sums of one statistics block, shifted by its first value so
/// the variance keeps its precision far from zero. Value `j` of the block goes
/// to lane `j % 8`: the lanes' additions do not wait on each other (one
/// chain of dependent additions costs ~4 cycles a value) and vectorize; they
/// are combined in a fixed order, so the result depends only on the block.
/// `add` takes whole multiples of the lane count but for the block's last
/// piece.
struct BlockSums {
    shift: f64,
    n: usize,
    sum: [f64; LANES],
    sum_sq: [f64; LANES],
    nonzero: [usize; LANES],
}

const LANES: usize = 8;

impl BlockSums {
    fn new(shift: f64) -> Self {
        BlockSums {
            shift,
            n: 0,
            sum: [0.0; LANES],
            sum_sq: [0.0; LANES],
            nonzero: [0; LANES],
        }
    }

    #[inline]
    fn add(&mut self, values: &[f64]) {
        debug_assert!(self.n.is_multiple_of(LANES));
        self.n += values.len();
        let mut groups = values.chunks_exact(LANES);
        for group in &mut groups {
            for (lane, &v) in group.iter().enumerate() {
                self.add_one(lane, v);
            }
        }
        for (lane, &v) in groups.remainder().iter().enumerate() {
            self.add_one(lane, v);
        }
    }

    #[inline(always)]
    fn add_one(&mut self, lane: usize, v: f64) {
        let d = v - self.shift;
        self.sum[lane] += d;
        self.sum_sq[lane] += d * d;
        self.nonzero[lane] += usize::from(v != 0.0);
    }

    fn finish(self) -> StatsAcc {
        let combine =
            |l: [f64; LANES]| ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
        let (sum, sum_sq) = (combine(self.sum), combine(self.sum_sq));
        let n = self.n.max(1) as f64;
        StatsAcc {
            n: self.n,
            mean: self.shift + sum / n,
            m2: (sum_sq - sum * sum / n).max(0.0),
            nonzero: self.nonzero.iter().sum(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WeightReport {
    pub name: String,
    pub node: String,
    /// `linear` | `conv` | `conv_transpose` | `norm_scale` | `bias`.
    pub kind: String,
    pub role: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub scheme: String,
    /// The scheme's parameters as resolved (Rust debug form).
    pub params: String,
    pub reason: String,
    pub notes: Vec<String>,
    pub before: Stats,
    pub after: Stats,
    /// ‖MMᵀ − gain²I‖ of the canonical weight after rounding to its dtype, for
    /// orthogonal-family schemes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orthogonality_error: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool_version: String,
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    pub seed: u64,
    pub scheme: String,
    pub dry_run: bool,
    pub weights: Vec<WeightReport>,
    pub kept: Vec<Kept>,
    pub warnings: Vec<String>,
    pub timings_ms: Timings,
    /// LSUV's data pass: the data it ran on and each layer's result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lsuv: Option<LsuvReport>,
    /// Norm layers reset to γ = 1, β = 0, mean 0, variance 1 (`--reset-norms`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub norms_reset: Vec<NormReset>,
}

/// LSUV's data pass (Mishkin & Matas 2016), as run.
#[derive(Debug, Clone, Serialize)]
pub struct LsuvReport {
    /// The samples the layers were calibrated on: the user's file or the task
    /// `reinit verify` would use, with the sample count.
    pub data: String,
    pub target_variance: f64,
    /// In graph order.
    pub layers: Vec<LsuvLayer>,
}

/// One LSUV layer: the scale found, and its output variance on the data with it.
#[derive(Debug, Clone, Serialize)]
pub struct LsuvLayer {
    pub weight: String,
    pub scale: f64,
    pub output_variance: f64,
    pub iterations: usize,
}

/// A norm layer whose parameters were reset.
#[derive(Debug, Clone, Serialize)]
pub struct NormReset {
    pub node: String,
    pub op: String,
    /// The initializers set (γ, β, running mean, running variance).
    pub tensors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub load: f64,
    pub analyze_and_plan: f64,
    pub init: f64,
    pub write: f64,
}

impl Report {
    /// A short human summary for stderr.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let changed = self.weights.iter().filter(|w| w.kind != "bias").count();
        out.push_str(&format!(
            "{}: {} weights {} with {} (seed {}), {} kept\n",
            self.model,
            changed,
            if self.dry_run { "planned" } else { "rewritten" },
            self.scheme,
            self.seed,
            self.kept.len()
        ));
        for k in &self.kept {
            out.push_str(&format!("  kept {}: {}\n", k.name, k.reason));
        }
        for w in &self.warnings {
            out.push_str(&format!("  warning: {w}\n"));
        }
        if let Some(lsuv) = &self.lsuv {
            let vars = lsuv.layers.iter().map(|l| l.output_variance);
            let (lo, hi) = vars.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
            out.push_str(&format!(
                "  lsuv: {} layers calibrated on {}; output variance {lo:.3}..{hi:.3} (target {})\n",
                lsuv.layers.len(),
                lsuv.data,
                lsuv.target_variance
            ));
        }
        if !self.norms_reset.is_empty() {
            out.push_str(&format!(
                "  {} norm layers reset to γ = 1, β = 0, running mean 0, variance 1{}\n",
                self.norms_reset.len(),
                if self.scheme == "auto" {
                    " (auto resets norms)"
                } else {
                    ""
                }
            ));
        }
        let t = &self.timings_ms;
        out.push_str(&format!(
            "  time: load {:.0} ms, plan {:.0} ms, init {:.0} ms, write {:.0} ms\n",
            t.load, t.analyze_and_plan, t.init, t.write
        ));
        if let Some(output) = &self.output {
            out.push_str(&format!("  wrote {output}\n"));
        }
        out
    }

    /// The plan as a table (for `--dry-run`).
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<44} {:<16} {:<18} {:<16} {}\n",
            "weight", "role", "shape", "scheme", "reason"
        );
        for w in &self.weights {
            out.push_str(&format!(
                "{:<44} {:<16} {:<18} {:<16} {}\n",
                w.name,
                w.role,
                format!("{:?}", w.shape),
                w.scheme,
                w.reason
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_match_the_two_pass_formulas() {
        let v: Vec<f64> = (0..1000)
            .map(|i| 1e4 + ((i * 37) % 101) as f64 * 0.01 - if i % 3 == 0 { 1e4 } else { 0.0 })
            .collect();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
        let s = Stats::of(&v);
        assert!((s.mean - mean).abs() < 1e-9 * mean.abs());
        assert!((s.std - std).abs() < 1e-9 * std);
        assert_eq!(Stats::of(&[0.0, 1.0, 0.0, 2.0]).density, 0.5);
        assert_eq!(Stats::of(&[]).density, 0.0);
    }

    #[test]
    fn stored_blocks_summarize_like_their_decoded_values() {
        // ragged lengths (not a multiple of the 8 lanes nor of the 64-value pieces)
        let values: Vec<f64> = (0..5003u32)
            .map(|i| ((i * 7919) % 1013) as f64 / 97.0 - 3.0 + f64::from(i % 7 == 0) * 1e3)
            .collect();
        for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
            let mut bytes = vec![0; values.len() * dtype.size().unwrap()];
            dtype.write_le(&values, &mut bytes).unwrap();
            let mut decoded = vec![0.0; values.len()];
            dtype.read_le(&bytes, &mut decoded).unwrap();
            for n in [0, 1, 7, 8, 63, 64, 65, 5003] {
                let size = dtype.size().unwrap();
                let from_bytes = StatsAcc::block_le(&bytes[..n * size], dtype).unwrap();
                let from_values = StatsAcc::block(&decoded[..n]);
                assert_eq!(from_bytes.finish(), from_values.finish(), "{dtype} n={n}");
            }
        }
        assert!(StatsAcc::block_le(&[0; 3], DType::F32).is_err());
    }

    #[test]
    fn block_statistics_match_the_definition_far_from_zero() {
        // 300,001 values near 1e6 (five blocks and a bit), spread ±0.5
        let values: Vec<f64> = (0..300_001u64)
            .map(|i| 1e6 + ((i * 7919) % 1000) as f64 / 1000.0 - 0.5)
            .collect();
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let s = Stats::of(&values);
        assert!((s.mean - mean).abs() < 1e-9, "{} vs {mean}", s.mean);
        assert!(
            (s.std - var.sqrt()).abs() < 1e-9,
            "{} vs {}",
            s.std,
            var.sqrt()
        );
        assert_eq!(s.density, 1.0);
        // pushing block-aligned pieces gives the same bits
        let mut acc = StatsAcc::default();
        acc.push(&values[..2 * STATS_BLOCK]);
        acc.push(&values[2 * STATS_BLOCK..]);
        assert_eq!(acc.finish(), s);
        // and so does any thread count
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| Stats::of(&values));
        assert_eq!(one, s);
        let zeros = Stats::of(&[0.0, 0.0, 2.0, 0.0]);
        assert_eq!((zeros.mean, zeros.density), (0.5, 0.25));
    }
}
