//! Trainability probes at initialisation (see `verification.md`): signal
//! propagation per layer, gradient norms per weight, and the singular values
//! of the input–output Jacobian.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};

use crate::data::{Rng, Task};
use crate::error::ExecError;
use crate::executor::{Executor, Mode};
use crate::train::{batch_output, loss_of};

#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerSignal {
    pub layer: String,
    /// Second moment q^l = mean(y²) of the layer output over the batch.
    pub q: f64,
    pub mean: f64,
    /// Standard deviation over the samples of each sample's second moment.
    pub spread: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Signal {
    /// Second moment of the (first, float) input; 1 for token inputs.
    pub input_q: f64,
    pub layers: Vec<LayerSignal>,
    /// q^L / q^0.
    pub ratio: f64,
    /// `ok`, `vanishing` (ratio < 1e-3) or `exploding` (> 1e3).
    pub flag: &'static str,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct JacobianStats {
    /// Mean and variance of the squared singular values σ².
    pub mean_sq_sv: f64,
    pub var_sq_sv: f64,
    /// Exact method only (`None` under random projections).
    pub min_sv: Option<f64>,
    pub max_sv: Option<f64>,
    /// `exact` (full Jacobian from one VJP per output) or `projection`.
    pub method: &'static str,
    /// All singular values (exact method).
    pub singular_values: Vec<f64>,
}

fn f64s(t: &Tensor) -> Result<Vec<f64>, ExecError> {
    Ok(t.to_dtype(DType::F64)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1()?)
}

fn second_moments(t: &Tensor) -> Result<(f64, f64, f64), ExecError> {
    let n = t.dim(0).unwrap_or(1).max(1);
    let v = f64s(t)?;
    let per = v.len() / n;
    let q = v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let qs: Vec<f64> = v
        .chunks(per.max(1))
        .map(|c| c.iter().map(|x| x * x).sum::<f64>() / c.len() as f64)
        .collect();
    let spread =
        (qs.iter().map(|x| (x - q) * (x - q)).sum::<f64>() / qs.len().max(1) as f64).sqrt();
    Ok((q, mean, spread))
}

/// The first `n` training samples on the executor's device.
fn probe_batch(exec: &Executor, task: &Task, n: usize) -> Result<crate::data::Split, ExecError> {
    let idx: Vec<usize> = (0..n.min(task.train.len)).collect();
    task.train.rows(&idx, exec.device())
}

fn main_input(exec: &Executor) -> String {
    exec.inputs()
        .first()
        .map(|s| s.name.clone())
        .unwrap_or_default()
}

/// q^l of every weighted layer, in [`Mode::Probe`].
pub fn signal(exec: &Executor, task: &Task, n: usize) -> Result<Signal, ExecError> {
    let b = probe_batch(exec, task, n)?;
    let probes: Vec<String> = exec.layers().iter().map(|l| l.output.clone()).collect();
    if !task.micro_batch {
        let out = exec.forward_probed(&b.inputs, Mode::Probe, &probes)?;
        return signal_of(exec, &b, &out.probes);
    }
    // one sample at a time, moments pooled over the concatenated samples
    let mut acc: Vec<Vec<Tensor>> = vec![Vec::new(); probes.len()];
    for i in 0..b.len {
        let one = b
            .inputs
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.narrow(0, i, 1)?)))
            .collect::<Result<_, ExecError>>()?;
        let out = exec.forward_probed(&one, Mode::Probe, &probes)?;
        for (a, p) in acc.iter_mut().zip(&probes) {
            // detached: the sample's graph is freed before the next
            a.push(out.probes[p].detach());
        }
    }
    let pooled = probes
        .into_iter()
        .zip(acc)
        .map(|(p, ts)| Ok((p, Tensor::cat(&ts, 0)?)))
        .collect::<Result<_, ExecError>>()?;
    signal_of(exec, &b, &pooled)
}

/// [`signal`] and [`grad_norms`] from one forward pass (the probed values of
/// the pass whose loss is then backpropagated) instead of two.
pub fn signal_and_grad_norms(
    exec: &Executor,
    task: &Task,
    n: usize,
) -> Result<(Signal, BTreeMap<String, f64>), ExecError> {
    if task.micro_batch {
        return Ok((signal(exec, task, n)?, grad_norms(exec, task, n)?));
    }
    let b = probe_batch(exec, task, n)?;
    let probes: Vec<String> = exec.layers().iter().map(|l| l.output.clone()).collect();
    let out = exec.forward_probed(&b.inputs, Mode::Probe, &probes)?;
    let signal = signal_of(exec, &b, &out.probes)?;
    let first = out.first().clone();
    drop(out);
    let grads = loss_of(task, &first, &b.targets)?.backward()?;
    Ok((signal, norms_of(exec, &grads)?))
}

pub(crate) fn signal_of(
    exec: &Executor,
    b: &crate::data::Split,
    probed: &std::collections::HashMap<String, Tensor>,
) -> Result<Signal, ExecError> {
    let x = &b.inputs[&main_input(exec)];
    let input_q = if x.dtype().is_float() {
        second_moments(x)?.0
    } else {
        1.0
    };
    let mut layers = Vec::new();
    for l in exec.layers() {
        let (q, mean, spread) = second_moments(&probed[&l.output])?;
        layers.push(LayerSignal {
            layer: l.name.clone(),
            q,
            mean,
            spread,
        });
    }
    Ok(finish_signal(input_q, layers))
}

fn finish_signal(input_q: f64, layers: Vec<LayerSignal>) -> Signal {
    let ratio = layers
        .last()
        .map(|l| l.q / input_q.max(1e-30))
        .unwrap_or(1.0);
    let flag = if ratio < 1e-3 {
        "vanishing"
    } else if ratio > 1e3 {
        "exploding"
    } else {
        "ok"
    };
    Signal {
        input_q,
        layers,
        ratio,
        flag,
    }
}

pub(crate) fn norms_of(
    exec: &Executor,
    grads: &candle_core::backprop::GradStore,
) -> Result<BTreeMap<String, f64>, ExecError> {
    let mut norms = BTreeMap::new();
    for p in exec.params().iter().filter(|p| p.trainable) {
        let g = match grads.get(p.var.as_tensor()) {
            Some(g) => g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?
                .sqrt(),
            None => 0.0,
        };
        norms.insert(p.name.clone(), g);
    }
    Ok(norms)
}

/// ‖∂L/∂W‖₂ of every trainable weight after one backward pass of the
/// training loss on the first batch, in [`Mode::Probe`].
pub fn grad_norms(
    exec: &Executor,
    task: &Task,
    n: usize,
) -> Result<BTreeMap<String, f64>, ExecError> {
    let b = probe_batch(exec, task, n)?;
    let out = batch_output(exec, task, &b, Mode::Probe)?;
    let grads = loss_of(task, &out, &b.targets)?.backward()?;
    norms_of(exec, &grads)
}

/// Outputs up to this size get the exact Jacobian (one VJP per output).
pub const EXACT_MAX_OUTPUTS: usize = 64;
/// Random projections used otherwise.
pub const PROJECTIONS: usize = 8;

/// Singular values of ∂y₀/∂x₀ (sample 0's output with respect to its input)
/// at init, in [`Mode::Probe`] within a batch of `n` (of 1 where the samples
/// are independent, [`Executor::couples_samples`]). `None` for integer
/// (token) inputs.
pub fn jacobian(
    exec: &Executor,
    task: &Task,
    n: usize,
    seed: u64,
) -> Result<Option<JacobianStats>, ExecError> {
    let name = main_input(exec);
    // The statistics are of the first sample's Jacobian; where no op couples
    // the samples (no BatchNormalization) the others only cost memory: a
    // batch-2 ViT-B/16 forward kept for the projections' backward passes was
    // the run's peak (README "`reinit verify` on real models").
    let n = if task.micro_batch || !exec.couples_samples() {
        1
    } else {
        n
    };
    let b = probe_batch(exec, task, n)?;
    let x = &b.inputs[&name];
    if !x.dtype().is_float() {
        return Ok(None);
    }
    let var = Var::from_tensor(&x.to_dtype(exec.dtype())?)?;
    let mut inputs = b.inputs.clone();
    inputs.insert(name, var.as_tensor().clone());
    // weights frozen: each VJP backpropagates along the input path only
    let out = exec.forward_frozen(&inputs, Mode::Probe)?.first().clone();
    crate::memory::debug_phase("jacobian: forward");
    let y0 = out.narrow(0, 0, 1)?.flatten_all()?;
    let d_out = y0.elem_count();
    let d_in = x.elem_count() / x.dim(0)?.max(1);
    let m = d_out.min(d_in).max(1);
    let vjp = |v: &[f64]| -> Result<Vec<f64>, ExecError> {
        let v = Tensor::from_vec(v.to_vec(), d_out, &Device::Cpu)?
            .to_dtype(y0.dtype())?
            .to_device(y0.device())?;
        let g = (&y0 * v)?.sum_all()?.backward()?;
        let gx = g
            .get(var.as_tensor())
            .ok_or_else(|| ExecError::Invalid("the output does not depend on the input".into()))?;
        f64s(&gx.narrow(0, 0, 1)?)
    };
    if d_out <= EXACT_MAX_OUTPUTS {
        let rows: Vec<Vec<f64>> = (0..d_out)
            .map(|k| {
                let mut e = vec![0.0; d_out];
                e[k] = 1.0;
                vjp(&e)
            })
            .collect::<Result<_, _>>()?;
        let mut a = vec![0.0; d_out * d_out];
        for i in 0..d_out {
            for j in 0..=i {
                let s: f64 = rows[i].iter().zip(&rows[j]).map(|(p, q)| p * q).sum();
                a[i * d_out + j] = s;
                a[j * d_out + i] = s;
            }
        }
        let mut ev = sym_eigenvalues(&mut a, d_out);
        ev.sort_by(|p, q| q.total_cmp(p));
        ev.truncate(m);
        let sq: Vec<f64> = ev.iter().map(|&e| e.max(0.0)).collect();
        let mean = sq.iter().sum::<f64>() / m as f64;
        let var = sq.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / m as f64;
        let sv: Vec<f64> = sq.iter().map(|s| s.sqrt()).collect();
        return Ok(Some(JacobianStats {
            mean_sq_sv: mean,
            var_sq_sv: var,
            min_sv: sv.last().copied(),
            max_sv: sv.first().copied(),
            method: "exact",
            singular_values: sv,
        }));
    }
    // Sketch B = Vᵀ J Jᵀ V with Gaussian V (d_out × k): E tr B = k tr A and
    // tr A² ≈ (‖B‖²_F − (tr B)²/k) / (k² + k − 2), A = J Jᵀ.
    let mut rng = Rng::new(seed ^ 0x6a61_636f);
    let k = PROJECTIONS;
    let cols: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            let col = vjp(&(0..d_out).map(|_| rng.normal()).collect::<Vec<_>>());
            crate::memory::debug_phase(&format!("jacobian: projection {i}"));
            col
        })
        .collect::<Result<_, _>>()?;
    let mut tr = 0.0;
    let mut fro = 0.0;
    for i in 0..k {
        for j in 0..k {
            let s: f64 = cols[i].iter().zip(&cols[j]).map(|(p, q)| p * q).sum();
            fro += s * s;
            if i == j {
                tr += s;
            }
        }
    }
    let kf = k as f64;
    let tr_a = tr / kf;
    let tr_a2 = ((fro - tr * tr / kf) / (kf * kf + kf - 2.0)).max(0.0);
    let mean = tr_a / m as f64;
    Ok(Some(JacobianStats {
        mean_sq_sv: mean,
        var_sq_sv: (tr_a2 / m as f64 - mean * mean).max(0.0),
        min_sv: None,
        max_sv: None,
        method: "projection",
        singular_values: Vec::new(),
    }))
}

/// Eigenvalues of a symmetric n×n matrix (cyclic Jacobi; n is small).
fn sym_eigenvalues(a: &mut [f64], n: usize) -> Vec<f64> {
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        let diag: f64 = (0..n).map(|i| a[i * n + i].powi(2)).sum();
        if off <= 1e-30 * diag.max(1e-300) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..n {
                    let arp = a[r * n + p];
                    let arq = a[r * n + q];
                    a[r * n + p] = c * arp - s * arq;
                    a[r * n + q] = s * arp + c * arq;
                }
                for r in 0..n {
                    let apr = a[p * n + r];
                    let aqr = a[q * n + r];
                    a[p * n + r] = c * apr - s * aqr;
                    a[q * n + r] = s * apr + c * aqr;
                }
            }
        }
    }
    (0..n).map(|i| a[i * n + i]).collect()
}

#[cfg(test)]
mod tests {
    use super::sym_eigenvalues;

    #[test]
    fn jacobi_eigenvalues_of_a_known_matrix() {
        // [[2,1],[1,2]] has eigenvalues 1 and 3
        let mut a = vec![2.0, 1.0, 1.0, 2.0];
        let mut ev = sym_eigenvalues(&mut a, 2);
        ev.sort_by(f64::total_cmp);
        assert!((ev[0] - 1.0).abs() < 1e-12 && (ev[1] - 3.0).abs() < 1e-12);
    }
}
