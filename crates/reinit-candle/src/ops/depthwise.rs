//! Depthwise 2-D convolution (every group reads one input channel:
//! `groups == C`, `O = m·C`): a direct per-channel kernel, forward and
//! backward, with no column matrix.
//!
//! Through [`super::im2col`] a depthwise conv first copied each input plane
//! `kh·kw` times into a column buffer and then ran a 1×9 product per channel
//! over it; the conv is memory-bound, so that copy was most of its cost
//! (MobileNetV2 has 17 of them, up to 112×112×96). Here every output row is
//! accumulated tap by tap from the input rows it reads (an axpy over a
//! contiguous row for stride 1), the input gradient is the same loop with
//! the roles swapped, and the weight gradient is one dot product per tap.
//!
//! Each task owns whole planes (forward: an output plane; `dx`: an input
//! plane and every output channel reading it; `dW`: one output channel over
//! the batch), and every sum runs in a fixed order, so results do not depend
//! on the thread count. CPU, f32/f64, like the im2col path.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::host::with_host;
use super::im2col::{Conv2dGeometry, valid_range};

/// Shapes of one depthwise convolution.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    /// output channels per input channel (the depth multiplier)
    m: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
}

impl Dims {
    fn new(x: &[usize], k: &[usize], g: &Conv2dGeometry) -> Result<Dims> {
        let bad = |m: String| candle_core::Error::Msg(format!("depthwise conv2d: {m}"));
        if x.len() != 4 || k.len() != 4 {
            return Err(bad(format!("input {x:?}, kernel {k:?}")));
        }
        let (n, c, h, w) = (x[0], x[1], x[2], x[3]);
        let (o, cg, kh, kw) = (k[0], k[1], k[2], k[3]);
        if !is_depthwise(c, o, cg, g.groups) || kh == 0 || kw == 0 {
            return Err(bad(format!(
                "input {x:?}, kernel {k:?}, groups {}",
                g.groups
            )));
        }
        let out = |len: usize, (b, e): (usize, usize), k: usize, s: usize, d: usize| {
            let span = d * (k - 1) + 1;
            let padded = len + b + e;
            if padded < span || s == 0 || d == 0 {
                Err(bad(format!(
                    "kernel span {span} exceeds padded input {padded}"
                )))
            } else {
                Ok((padded - span) / s + 1)
            }
        };
        Ok(Dims {
            n,
            c,
            h,
            w,
            m: o / c,
            kh,
            kw,
            ho: out(h, g.pads[0], kh, g.strides[0], g.dilations[0])?,
            wo: out(w, g.pads[1], kw, g.strides[1], g.dilations[1])?,
        })
    }

    fn o(&self) -> usize {
        self.c * self.m
    }
    fn taps(&self) -> usize {
        self.kh * self.kw
    }
}

/// Whether a conv of `c` input channels, `o` outputs, kernel depth `cg` and
/// `groups` is depthwise (each group reads exactly one input channel).
pub fn is_depthwise(c: usize, o: usize, cg: usize, groups: usize) -> bool {
    groups > 1 && cg == 1 && groups == c && o.is_multiple_of(c)
}

/// One tap's reach: the output rows and columns `[lo, hi)` that read inside
/// the input, and the input row/column each starts at.
#[derive(Clone, Copy)]
struct Tap {
    oh: (usize, usize),
    ow: (usize, usize),
    /// input row of output row 0 plus padding (`ih = oh·sh + ih_off − ph`)
    ih_off: usize,
    /// input column of output column `ow.0`
    iw0: usize,
}

fn taps(d: &Dims, g: &Conv2dGeometry) -> Vec<Tap> {
    let [(ph, _), (pw, _)] = g.pads;
    let [sh, sw] = g.strides;
    let [dh, dw] = g.dilations;
    let mut out = Vec::with_capacity(d.taps());
    for ki in 0..d.kh {
        let oh = valid_range(d.ho, d.h, sh, ki * dh, ph);
        for kj in 0..d.kw {
            let ow = valid_range(d.wo, d.w, sw, kj * dw, pw);
            let iw0 = if ow.1 > ow.0 {
                ow.0 * sw + kj * dw - pw
            } else {
                0
            };
            out.push(Tap {
                oh,
                ow,
                ih_off: ki * dh,
                iw0,
            });
        }
    }
    out
}

/// `y[ow] += c · x[iw0 + t·s]` over the columns of one tap.
#[inline]
fn axpy_row<T: WithDType>(y: &mut [T], x: &[T], c: T, s: usize) {
    if s == 1 {
        let x = &x[..y.len()];
        for (a, v) in y.iter_mut().zip(x) {
            *a += c * *v;
        }
    } else {
        for (a, v) in y.iter_mut().zip(x.iter().step_by(s)) {
            *a += c * *v;
        }
    }
}

/// `x[iw0 + t·s] += c · y[t]` (the adjoint of [`axpy_row`]).
#[inline]
fn scatter_row<T: WithDType>(x: &mut [T], y: &[T], c: T, s: usize) {
    if s == 1 {
        for (a, v) in x[..y.len()].iter_mut().zip(y) {
            *a += c * *v;
        }
    } else {
        for (a, v) in x.iter_mut().step_by(s).zip(y) {
            *a += c * *v;
        }
    }
}

/// `Σ_t y[t] · x[iw0 + t·s]`, in 8 interleaved partial sums (a fixed order,
/// and one the compiler can vectorise for stride 1).
#[inline]
fn dot_row<T: WithDType>(y: &[T], x: &[T], s: usize) -> T {
    let mut lanes = [T::zero(); 8];
    if s == 1 {
        let x = &x[..y.len()];
        let (yc, yr) = y.split_at(y.len() / 8 * 8);
        let (xc, xr) = x.split_at(yc.len());
        for (a, b) in yc.chunks_exact(8).zip(xc.chunks_exact(8)) {
            for l in 0..8 {
                lanes[l] += a[l] * b[l];
            }
        }
        for (i, (a, b)) in yr.iter().zip(xr).enumerate() {
            lanes[i] += *a * *b;
        }
    } else {
        for (i, (a, b)) in y.iter().zip(x.iter().step_by(s)).enumerate() {
            lanes[i % 8] += *a * *b;
        }
    }
    let mut sum = T::zero();
    for l in lanes {
        sum += l;
    }
    sum
}

struct DepthwiseConv2d(Conv2dGeometry);

impl DepthwiseConv2d {
    /// Output plane `(n, o)` from input plane `(n, o / m)`, row by row, taps
    /// accumulated into the row while it is in cache.
    fn forward<T: WithDType>(&self, x: &[T], w: &[T], d: &Dims) -> Vec<T> {
        let g = &self.0;
        let taps = taps(d, g);
        let (sh, sw, ph) = (g.strides[0], g.strides[1], g.pads[0].0);
        let (hw, howo, kk) = (d.h * d.w, d.ho * d.wo, d.taps());
        let mut y = vec![T::zero(); d.n * d.o() * howo];
        y.par_chunks_mut(howo).enumerate().for_each(|(plane, yp)| {
            let (s, o) = (plane / d.o(), plane % d.o());
            let xp = &x[(s * d.c + o / d.m) * hw..][..hw];
            let wk = &w[o * kk..][..kk];
            for (oh, yrow) in yp.chunks_mut(d.wo).enumerate() {
                for (t, tap) in taps.iter().enumerate() {
                    if oh < tap.oh.0 || oh >= tap.oh.1 || tap.ow.1 <= tap.ow.0 {
                        continue;
                    }
                    let ih = oh * sh + tap.ih_off - ph;
                    let xrow = &xp[ih * d.w..][..d.w];
                    axpy_row(&mut yrow[tap.ow.0..tap.ow.1], &xrow[tap.iw0..], wk[t], sw);
                }
            }
        });
        y
    }

    /// Input plane `(n, c)` gathers from the `m` output planes that read it.
    fn input_grad<T: WithDType>(&self, dy: &[T], w: &[T], d: &Dims) -> Vec<T> {
        let g = &self.0;
        let taps = taps(d, g);
        let (sh, sw, ph) = (g.strides[0], g.strides[1], g.pads[0].0);
        let (hw, howo, kk) = (d.h * d.w, d.ho * d.wo, d.taps());
        let mut dx = vec![T::zero(); d.n * d.c * hw];
        dx.par_chunks_mut(hw).enumerate().for_each(|(plane, xp)| {
            let (s, c) = (plane / d.c, plane % d.c);
            for o in c * d.m..(c + 1) * d.m {
                let yp = &dy[(s * d.o() + o) * howo..][..howo];
                let wk = &w[o * kk..][..kk];
                for (oh, yrow) in yp.chunks(d.wo).enumerate() {
                    for (t, tap) in taps.iter().enumerate() {
                        if oh < tap.oh.0 || oh >= tap.oh.1 || tap.ow.1 <= tap.ow.0 {
                            continue;
                        }
                        let ih = oh * sh + tap.ih_off - ph;
                        let xrow = &mut xp[ih * d.w..][..d.w];
                        scatter_row(&mut xrow[tap.iw0..], &yrow[tap.ow.0..tap.ow.1], wk[t], sw);
                    }
                }
            }
        });
        dx
    }

    /// `dW[o][tap] = Σ_n Σ_(oh, ow) dy[n, o, oh, ow] · x[n, o / m, ih, iw]`,
    /// one output channel per task, samples in order.
    fn weight_grad<T: WithDType>(&self, dy: &[T], x: &[T], d: &Dims) -> Vec<T> {
        let g = &self.0;
        let taps = taps(d, g);
        let (sh, sw, ph) = (g.strides[0], g.strides[1], g.pads[0].0);
        let (hw, howo, kk) = (d.h * d.w, d.ho * d.wo, d.taps());
        let mut dw = vec![T::zero(); d.o() * kk];
        dw.par_chunks_mut(kk).enumerate().for_each(|(o, wk)| {
            for s in 0..d.n {
                let yp = &dy[(s * d.o() + o) * howo..][..howo];
                let xp = &x[(s * d.c + o / d.m) * hw..][..hw];
                for (t, tap) in taps.iter().enumerate() {
                    if tap.ow.1 <= tap.ow.0 {
                        continue;
                    }
                    let mut acc = T::zero();
                    for oh in tap.oh.0..tap.oh.1 {
                        let ih = oh * sh + tap.ih_off - ph;
                        let yrow = &yp[oh * d.wo..][tap.ow.0..tap.ow.1];
                        acc += dot_row(yrow, &xp[ih * d.w + tap.iw0..(ih + 1) * d.w], sw);
                    }
                    wk[t] += acc;
                }
            }
        });
        dw
    }

    fn backward<T: WithDType>(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = Dims::new(x.dims(), w.dims(), &self.0)?;
        with_host::<T, _>(grad, |dy| {
            // Only the operands that are tracked: the image at the first
            // conv, or frozen weights under the Jacobian probe, cost nothing.
            let dx = if x.track_op() {
                let dx = with_host::<T, _>(w, |wv| Ok(self.input_grad(dy, wv, &d)))?;
                Some(Tensor::from_vec(dx, x.dims(), x.device())?)
            } else {
                None
            };
            let dw = if w.track_op() {
                let dw = with_host::<T, _>(x, |xv| Ok(self.weight_grad(dy, xv, &d)))?;
                Some(Tensor::from_vec(dw, w.dims(), w.device())?)
            } else {
                None
            };
            Ok((dx, dw))
        })
    }
}

fn host<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    l.contiguous_offsets()
        .map(|(a, b)| &data[a..b])
        .ok_or_else(|| candle_core::Error::Msg("depthwise conv2d: non-contiguous operand".into()))
}

impl CustomOp2 for DepthwiseConv2d {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::new(l1.dims(), l2.dims(), &self.0)?;
        let shape = Shape::from((d.n, d.o(), d.ho, d.wo));
        let y = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(self.forward(host(s1, l1)?, host(s2, l2)?, &d))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(self.forward(host(s1, l1)?, host(s2, l2)?, &d))
            }
            _ => {
                return Err(candle_core::Error::Msg(
                    "depthwise conv2d: f32 or f64 operands of one dtype".into(),
                ));
            }
        };
        Ok((y, shape))
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
                "depthwise conv2d: dtype {dt:?}"
            ))),
        }
    }
}

/// `x [N, C, H, W] ⋆ w [m·C, 1, kh, kw]` with `groups == C` →
/// `[N, m·C, Ho, Wo]`, differentiable in both operands. CPU, f32/f64 (the
/// caller checks with `im2col_applies`).
pub fn conv2d_depthwise(x: &Tensor, w: &Tensor, geometry: Conv2dGeometry) -> Result<Tensor> {
    Dims::new(x.dims(), w.dims(), &geometry)?;
    x.contiguous()?
        .apply_op2(&w.contiguous()?, DepthwiseConv2d(geometry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::im2col::conv2d_im2col;
    use crate::ops::im2col::tests::seq;
    use candle_core::{Device, Var};

    /// Against the im2col path (itself checked against candle's conv2d and
    /// by finite differences) in f64: forward and both gradients, with
    /// strides, asymmetric pads, dilations and a depth multiplier.
    #[test]
    fn matches_im2col_forward_and_backward() {
        let dev = Device::Cpu;
        // (n, c, h, w, m, kh, kw, pads, strides, dilations)
        type Case = (
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            [(usize, usize); 2],
            [usize; 2],
            [usize; 2],
        );
        let cases: &[Case] = &[
            (2, 4, 9, 9, 1, 3, 3, [(1, 1), (1, 1)], [1, 1], [1, 1]),
            (2, 3, 10, 9, 1, 3, 3, [(1, 1), (1, 1)], [2, 2], [1, 1]),
            (1, 3, 11, 12, 2, 3, 3, [(0, 1), (2, 0)], [2, 3], [1, 1]),
            (2, 2, 8, 8, 1, 5, 3, [(2, 2), (1, 1)], [1, 2], [2, 1]),
            (1, 5, 4, 4, 1, 3, 3, [(1, 1), (1, 1)], [2, 2], [1, 1]),
            (3, 2, 7, 7, 3, 1, 1, [(0, 0), (0, 0)], [1, 1], [1, 1]),
            (1, 2, 3, 3, 1, 5, 5, [(2, 2), (2, 2)], [1, 1], [1, 1]),
        ];
        for &(n, c, h, w, m, kh, kw, pads, strides, dilations) in cases {
            let x = Var::from_vec(seq(n * c * h * w, 0.01), (n, c, h, w), &dev).unwrap();
            let wt = Var::from_vec(seq(m * c * kh * kw, 0.02), (m * c, 1, kh, kw), &dev).unwrap();
            let geometry = Conv2dGeometry {
                pads,
                strides,
                dilations,
                groups: c,
            };
            let ours = conv2d_depthwise(x.as_tensor(), wt.as_tensor(), geometry).unwrap();
            let theirs = conv2d_im2col(x.as_tensor(), wt.as_tensor(), geometry).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            let diff = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);
            let probe = Tensor::from_vec(seq(ours.elem_count(), 0.03), ours.dims(), &dev).unwrap();
            let grads = |y: &Tensor| (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let (ga, gb) = (grads(&ours), grads(&theirs));
            for v in [&x, &wt] {
                let a = ga.get(v.as_tensor()).unwrap();
                let b = gb.get(v.as_tensor()).unwrap();
                let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
                assert!(
                    diff.to_scalar::<f64>().unwrap() < 1e-10,
                    "{:?} case {:?}",
                    v.dims(),
                    (n, c, h, w, m, kh, kw, pads, strides, dilations)
                );
            }
        }
    }

    /// The same numbers at any thread count (each output owned by one task,
    /// sums in a fixed order).
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let dev = Device::Cpu;
        let (n, c, h, w) = (2, 6, 13, 11);
        let x = Var::from_vec(
            seq(n * c * h * w, 0.01)
                .into_iter()
                .map(|v| v as f32)
                .collect(),
            (n, c, h, w),
            &dev,
        )
        .unwrap();
        let wt = Var::from_vec(
            seq(c * 9, 0.02).into_iter().map(|v| v as f32).collect(),
            (c, 1, 3, 3),
            &dev,
        )
        .unwrap();
        let geometry = Conv2dGeometry {
            pads: [(1, 1); 2],
            strides: [2, 2],
            dilations: [1, 1],
            groups: c,
        };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let y = conv2d_depthwise(x.as_tensor(), wt.as_tensor(), geometry).unwrap();
                let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (
                    flat(&y),
                    flat(g.get(x.as_tensor()).unwrap()),
                    flat(g.get(wt.as_tensor()).unwrap()),
                )
            })
        };
        assert_eq!(run(1), run(3));
    }
}
