//! 2-D convolution as im2col + matmul: a candle [`CustomOp2`] with an explicit
//! backward whose heavy work is two more matmuls and a col2im scatter.
//!
//! candle 0.11's own conv2d backward runs the kernel gradient as a convolution
//! with an output-sized kernel and the input gradient through its direct
//! conv_transpose2d loop; on the tiny ResNet that is ~75% of a training step.
//! Here, with `cols = im2col(x)` of shape `[groups, C/g·kh·kw, N·Ho·Wo]`:
//!
//! - forward `y[g] = W[g] · cols[g]`,
//! - `dW[g] = dy[g] · cols[g]ᵀ`,
//! - `dx = col2im(W[g]ᵀ · dy[g])`.
//!
//! Per-axis pads (asymmetric too), strides and dilations are handled natively,
//! so no explicit pad/crop copies are needed. CPU only, f32/f64; other devices
//! and dtypes keep candle's conv2d (see `ops::conv::conv2d`).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::host::{Mat, gemm, with_host};

/// Geometry of one 2-D convolution: per-axis `(begin, end)` zero pads,
/// strides and dilations, and the group count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeometry {
    pub pads: [(usize, usize); 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub groups: usize,
}

#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
}

impl Dims {
    fn new(x: &[usize], k: &[usize], g: &Conv2dGeometry) -> Result<Dims> {
        let bad = |m: String| candle_core::Error::Msg(format!("im2col conv2d: {m}"));
        if x.len() != 4 || k.len() != 4 {
            return Err(bad(format!("input {x:?}, kernel {k:?}")));
        }
        let (n, c, h, w) = (x[0], x[1], x[2], x[3]);
        let (o, cg, kh, kw) = (k[0], k[1], k[2], k[3]);
        let groups = g.groups.max(1);
        if c != cg * groups || o % groups != 0 || kh == 0 || kw == 0 {
            return Err(bad(format!("input {x:?}, kernel {k:?}, groups {groups}")));
        }
        let out = |len: usize, (b, e): (usize, usize), k: usize, s: usize, d: usize| {
            let span = d * (k - 1) + 1;
            let padded = len + b + e;
            if padded < span || s == 0 {
                Err(bad(format!(
                    "kernel span {span} exceeds padded input {padded}"
                )))
            } else {
                Ok((padded - span) / s + 1)
            }
        };
        let ho = out(h, g.pads[0], kh, g.strides[0], g.dilations[0])?;
        let wo = out(w, g.pads[1], kw, g.strides[1], g.dilations[1])?;
        Ok(Dims {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            ho,
            wo,
        })
    }

    fn cg(&self, g: &Conv2dGeometry) -> usize {
        self.c / g.groups.max(1)
    }
    /// Rows of the column matrix per group.
    fn k(&self, g: &Conv2dGeometry) -> usize {
        self.cg(g) * self.kh * self.kw
    }
    fn l(&self) -> usize {
        self.ho * self.wo
    }
}

/// Output positions `ow` in `[lo, hi)` read an input column inside `[0, w)`:
/// `0 ≤ ow·s + off − pad < w`.
pub(super) fn valid_range(
    out: usize,
    w: usize,
    s: usize,
    off: usize,
    pad: usize,
) -> (usize, usize) {
    // ow·s ≥ pad − off
    let lo = if pad > off {
        (pad - off).div_ceil(s)
    } else {
        0
    };
    // ow·s < w + pad − off
    let hi = if w + pad > off {
        (w + pad - off).div_ceil(s)
    } else {
        0
    };
    (lo.min(out), hi.min(out).max(lo.min(out)))
}

fn host<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => Err(candle_core::Error::Msg(
            "im2col conv2d: non-contiguous operand".into(),
        )),
    }
}

/// How one sample's column matrix `[C·kh·kw, Ho·Wo]` is obtained: a 1×1
/// kernel with stride 1 and no padding reads the sample `[C, H·W]` itself (no
/// copy: most convolutions of a bottleneck ResNet); otherwise [`im2col`] fills
/// a buffer reused for every sample of the batch.
struct Columns<T> {
    buf: Vec<T>,
    identity: bool,
}

impl<T: WithDType> Columns<T> {
    fn new(d: &Dims, g: &Conv2dGeometry) -> Self {
        let identity = d.kh == 1 && d.kw == 1 && g.strides == [1, 1] && g.pads == [(0, 0); 2];
        let len = if identity {
            0
        } else {
            d.c * d.kh * d.kw * d.l()
        };
        Columns {
            buf: vec![T::zero(); len],
            identity,
        }
    }

    fn of<'a>(&'a mut self, sample: &'a [T], d: &Dims, g: &Conv2dGeometry) -> &'a [T] {
        if self.identity {
            sample
        } else {
            im2col(sample, &mut self.buf, d, g);
            &self.buf
        }
    }
}

/// One sample `[C, H, W]` → `cols [C·kh·kw, Ho·Wo]` (rows grouped by channel,
/// so the rows of group `g` are the contiguous block `g·K .. (g+1)·K`),
/// channels in parallel. Entries that read padding are never written: `cols`
/// starts zeroed and every sample writes the same entries.
fn im2col<T: WithDType>(x: &[T], cols: &mut [T], d: &Dims, g: &Conv2dGeometry) {
    let l = d.l();
    let [(ph, _), (pw, _)] = g.pads;
    let [sh, sw] = g.strides;
    let [dh, dw] = g.dilations;
    cols.par_chunks_mut(d.kh * d.kw * l)
        .enumerate()
        .for_each(|(ch, rows)| {
            let src = &x[ch * d.h * d.w..][..d.h * d.w];
            for ki in 0..d.kh {
                let (oh_lo, oh_hi) = valid_range(d.ho, d.h, sh, ki * dh, ph);
                for kj in 0..d.kw {
                    let (ow_lo, ow_hi) = valid_range(d.wo, d.w, sw, kj * dw, pw);
                    if ow_hi <= ow_lo {
                        continue;
                    }
                    let dst = &mut rows[(ki * d.kw + kj) * l..][..l];
                    let iw0 = ow_lo * sw + kj * dw - pw;
                    for oh in oh_lo..oh_hi {
                        let ih = oh * sh + ki * dh - ph;
                        let xrow = &src[ih * d.w..(ih + 1) * d.w];
                        let drow = &mut dst[oh * d.wo..][ow_lo..ow_hi];
                        if sw == 1 {
                            drow.copy_from_slice(&xrow[iw0..iw0 + drow.len()]);
                        } else {
                            for (t, v) in drow.iter_mut().enumerate() {
                                *v = xrow[iw0 + t * sw];
                            }
                        }
                    }
                }
            }
        });
}

/// The adjoint of [`im2col`] for one sample: adds every column entry into its
/// input pixel of `x` `[C, H, W]`, channels in parallel.
fn col2im<T: WithDType>(cols: &[T], x: &mut [T], d: &Dims, g: &Conv2dGeometry) {
    let l = d.l();
    let [(ph, _), (pw, _)] = g.pads;
    let [sh, sw] = g.strides;
    let [dh, dw] = g.dilations;
    x.par_chunks_mut(d.h * d.w)
        .zip(cols.par_chunks(d.kh * d.kw * l))
        .for_each(|(plane, rows)| {
            for ki in 0..d.kh {
                let (oh_lo, oh_hi) = valid_range(d.ho, d.h, sh, ki * dh, ph);
                for kj in 0..d.kw {
                    let (ow_lo, ow_hi) = valid_range(d.wo, d.w, sw, kj * dw, pw);
                    if ow_hi <= ow_lo {
                        continue;
                    }
                    let src = &rows[(ki * d.kw + kj) * l..][..l];
                    let iw0 = ow_lo * sw + kj * dw - pw;
                    for oh in oh_lo..oh_hi {
                        let ih = oh * sh + ki * dh - ph;
                        let xrow = &mut plane[ih * d.w..(ih + 1) * d.w];
                        let srow = &src[oh * d.wo..][ow_lo..ow_hi];
                        if sw == 1 {
                            for (a, v) in xrow[iw0..iw0 + srow.len()].iter_mut().zip(srow) {
                                *a += *v;
                            }
                        } else {
                            for (a, v) in xrow[iw0..].iter_mut().step_by(sw).zip(srow) {
                                *a += *v;
                            }
                        }
                    }
                }
            }
        });
}

/// Grouped convolutions with tiny per-group products (depthwise: one output
/// channel, `kh·kw` rows) run as direct loops, groups in parallel: a gemm call
/// per `1×9` product spends its time in setup and thread synchronisation.
fn direct(groups: usize, og: usize, k: usize) -> bool {
    groups > 1 && og * k <= 64
}

/// `out[g][i][:] = Σ_j A[g](i, j) · b[g][j][:]` with `A[g]` stored `[m, kk]`
/// (or `[kk, m]` when `trans`), `b` `[groups, kk, n]`, `out` `[groups, m, n]`
/// (overwritten).
fn direct_mm<T: WithDType>(
    a: &[T],
    b: &[T],
    out: &mut [T],
    (m, kk, n): (usize, usize, usize),
    trans: bool,
) {
    out.par_chunks_mut(m * n).enumerate().for_each(|(g, og)| {
        og.fill(T::zero());
        let ag = &a[g * m * kk..][..m * kk];
        let bg = &b[g * kk * n..][..kk * n];
        for (i, row) in og.chunks_mut(n).enumerate() {
            for j in 0..kk {
                let c = if trans { ag[j * m + i] } else { ag[i * kk + j] };
                for (o, v) in row.iter_mut().zip(&bg[j * n..(j + 1) * n]) {
                    *o += c * *v;
                }
            }
        }
    });
}

/// `out[g][i][j] += a[g][i][:] · b[g][j][:]`, `a` `[groups, m, n]`, `b`
/// `[groups, kk, n]`, `out` `[groups, m, kk]`.
fn direct_dots_add<T: WithDType>(
    a: &[T],
    b: &[T],
    out: &mut [T],
    (m, kk, n): (usize, usize, usize),
) {
    out.par_chunks_mut(m * kk).enumerate().for_each(|(g, og)| {
        for i in 0..m {
            let ar = &a[(g * m + i) * n..][..n];
            for j in 0..kk {
                let br = &b[(g * kk + j) * n..][..n];
                let mut acc = T::zero();
                for (p, q) in ar.iter().zip(br) {
                    acc += *p * *q;
                }
                og[i * kk + j] += acc;
            }
        }
    });
}

struct Im2ColConv2d(Conv2dGeometry);

impl Im2ColConv2d {
    /// One sample at a time: `y[n][g] = W[g] · cols(x[n])[g]`, written in place.
    fn forward<T: WithDType>(
        &self,
        x: &[T],
        xs: &[usize],
        w: &[T],
        ws: &[usize],
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let d = Dims::new(xs, ws, g)?;
        let (groups, k, l) = (g.groups.max(1), d.k(g), d.l());
        let og = d.o / groups;
        let chw = d.c * d.h * d.w;
        let mut y = vec![T::zero(); d.n * d.o * l];
        let mut cols = Columns::new(&d, g);
        for s in 0..d.n {
            let cols_s = cols.of(&x[s * chw..][..chw], &d, g);
            let ys = &mut y[s * d.o * l..][..d.o * l];
            if direct(groups, og, k) {
                direct_mm(w, cols_s, ys, (og, k, l), false);
                continue;
            }
            for gi in 0..groups {
                gemm(
                    &mut ys[gi * og * l..],
                    l,
                    false,
                    Mat::rowmajor(&w[gi * og * k..], og, k),
                    Mat::rowmajor(&cols_s[gi * k * l..], k, l),
                )?;
            }
        }
        Ok((
            T::to_cpu_storage_owned(y),
            Shape::from((d.n, d.o, d.ho, d.wo)),
        ))
    }

    /// `(dx, dw)`, each only where its operand is tracked (an untracked
    /// input, e.g. the image at the first conv, or frozen weights under the
    /// Jacobian probe, costs nothing). `dW[g] = Σ_n dy[n][g] · cols(x[n])[g]ᵀ`
    /// accumulated by gemm; `dx[n] = col2im(W[g]ᵀ · dy[n][g])`.
    fn backward<T: WithDType>(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (need_dx, need_dw) = (x.track_op(), w.track_op());
        let g = &self.0;
        let d = Dims::new(x.dims(), w.dims(), g)?;
        let (groups, k, l) = (g.groups.max(1), d.k(g), d.l());
        let og = d.o / groups;
        let chw = d.c * d.h * d.w;
        let is_direct = direct(groups, og, k);
        with_host::<T, _>(grad, |dy| {
            let dw = if need_dw {
                let dw = with_host::<T, _>(x, |xv| {
                    let mut dw = vec![T::zero(); d.o * k];
                    let mut cols = Columns::new(&d, g);
                    for s in 0..d.n {
                        let cols_s = cols.of(&xv[s * chw..][..chw], &d, g);
                        let dys = &dy[s * d.o * l..][..d.o * l];
                        if is_direct {
                            direct_dots_add(dys, cols_s, &mut dw, (og, k, l));
                            continue;
                        }
                        for gi in 0..groups {
                            gemm(
                                &mut dw[gi * og * k..],
                                k,
                                s > 0,
                                Mat::rowmajor(&dys[gi * og * l..], og, l),
                                Mat::rowmajor(&cols_s[gi * k * l..], k, l).t(),
                            )?;
                        }
                    }
                    Ok(dw)
                })?;
                Some(Tensor::from_vec(dw, w.dims(), w.device())?)
            } else {
                None
            };
            let dx = if need_dx {
                let dx = with_host::<T, _>(w, |wv| {
                    let mut dx = vec![T::zero(); d.n * chw];
                    let identity = Columns::<T>::new(&d, g).identity;
                    let mut dcols =
                        vec![T::zero(); if identity { 0 } else { d.c * d.kh * d.kw * l }];
                    for s in 0..d.n {
                        let dys = &dy[s * d.o * l..][..d.o * l];
                        let dxs = &mut dx[s * chw..][..chw];
                        let target: &mut [T] = if identity { dxs } else { &mut dcols };
                        if is_direct {
                            direct_mm(wv, dys, target, (k, og, l), true);
                        } else {
                            for gi in 0..groups {
                                gemm(
                                    &mut target[gi * k * l..],
                                    l,
                                    false,
                                    Mat::rowmajor(&wv[gi * og * k..], og, k).t(),
                                    Mat::rowmajor(&dys[gi * og * l..], og, l),
                                )?;
                            }
                        }
                        if !identity {
                            col2im(&dcols, &mut dx[s * chw..][..chw], &d, g);
                        }
                    }
                    Ok(dx)
                })?;
                Some(Tensor::from_vec(dx, x.dims(), x.device())?)
            } else {
                None
            };
            Ok((dx, dw))
        })
    }
}

impl CustomOp2 for Im2ColConv2d {
    fn name(&self) -> &'static str {
        "im2col-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => self.forward(
                host::<f32>(s1, l1)?,
                l1.dims(),
                host::<f32>(s2, l2)?,
                l2.dims(),
            ),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => self.forward(
                host::<f64>(s1, l1)?,
                l1.dims(),
                host::<f64>(s2, l2)?,
                l2.dims(),
            ),
            _ => Err(candle_core::Error::Msg(
                "im2col conv2d: f32 or f64 operands of one dtype".into(),
            )),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.to_dtype(x.dtype())?;
        match x.dtype() {
            DType::F32 => self.backward::<f32>(x, w, &grad),
            DType::F64 => self.backward::<f64>(x, w, &grad),
            dt => Err(candle_core::Error::Msg(format!(
                "im2col conv2d: dtype {dt:?}"
            ))),
        }
    }
}

/// Whether [`conv2d_im2col`] can run `x ⋆ w` (CPU, f32/f64, same dtype).
pub fn im2col_applies(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == w.dtype() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// `x [N, C, H, W] ⋆ w [O, C/groups, kh, kw]` → `[N, O, Ho, Wo]` by im2col and
/// matmul, differentiable in both operands. CPU, f32/f64 only.
pub fn conv2d_im2col(x: &Tensor, w: &Tensor, geometry: Conv2dGeometry) -> Result<Tensor> {
    Dims::new(x.dims(), w.dims(), &geometry)?;
    x.contiguous()?
        .apply_op2(&w.contiguous()?, Im2ColConv2d(geometry))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Device;

    /// Deterministic test values spread over [-50, 50]·scale, no two neighbours equal.
    pub(crate) fn seq(n: usize, scale: f64) -> Vec<f64> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) * scale)
            .collect()
    }

    /// Against candle's own conv2d (symmetric pads, equal strides) in f64,
    /// forward and both gradients.
    #[test]
    fn matches_candle_conv2d_forward_and_backward() {
        let dev = Device::Cpu;
        for &(n, c, h, w, o, k, pad, stride, dil, groups) in &[
            (2, 4, 9, 9, 6, 3, 1, 1, 1, 1),
            (2, 4, 9, 9, 6, 3, 1, 2, 1, 2),
            (1, 3, 10, 10, 3, 3, 2, 1, 2, 3),
            (3, 8, 6, 6, 16, 1, 0, 1, 1, 1),
            (2, 2, 7, 7, 4, 5, 2, 3, 1, 1),
            (2, 6, 8, 8, 6, 3, 1, 1, 1, 6),
            (2, 4, 9, 9, 8, 3, 1, 2, 1, 4),
        ] {
            let x =
                candle_core::Var::from_vec(seq(n * c * h * w, 0.01), (n, c, h, w), &dev).unwrap();
            let wt = candle_core::Var::from_vec(
                seq(o * (c / groups) * k * k, 0.02),
                (o, c / groups, k, k),
                &dev,
            )
            .unwrap();
            let geometry = Conv2dGeometry {
                pads: [(pad, pad); 2],
                strides: [stride; 2],
                dilations: [dil; 2],
                groups,
            };
            let ours = conv2d_im2col(x.as_tensor(), wt.as_tensor(), geometry).unwrap();
            let theirs = x.conv2d(&wt, pad, stride, dil, groups).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let diff = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);
            let probe = Tensor::from_vec(seq(ours.elem_count(), 0.03), ours.dims(), &dev).unwrap();
            let ga = (&ours * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gb = (&theirs * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&x, &wt] {
                let a = ga.get(v.as_tensor()).unwrap();
                let b = gb.get(v.as_tensor()).unwrap();
                let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
                assert!(diff.to_scalar::<f64>().unwrap() < 1e-10, "{:?}", v.dims());
            }
        }
    }
}
