//! Finite-difference gradient check, in f64, of every registered
//! differentiable op. Loss = Σ_k Σ out_k ⊙ R_k with fixed random R_k; the
//! autograd gradient of each float input is compared with central differences.

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use reinit_onnx::proto::{AttributeProto, NodeProto};

use super::{OpArgs, registry};
use cases::{ai, cases, scalar};

mod cases;
use crate::executor::Mode;

/// Ops without a gradient to check: shape computations, comparisons, logic,
/// piecewise-constant functions and integer results.
const NON_DIFFERENTIABLE: &[&str] = &[
    "Shape",
    "Size",
    "Range",
    "ConstantOfShape",
    "Constant",
    "CastLike",
    "Equal",
    "IsNaN",
    "IsInf",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "ArgMax",
    "ArgMin",
];

/// Ops whose gradient is straight-through by design (checked on their own in
/// `quantize_passes_the_gradient_straight_through`).
const STRAIGHT_THROUGH: &[&str] = &["QuantizeLinear"];

#[derive(Clone)]
enum In {
    /// differentiable float, standard normal × scale
    F(Vec<usize>, f64),
    /// differentiable float in [0.5, 2)
    Pos(Vec<usize>),
    /// constant float values
    Val(Vec<f64>, Vec<usize>),
    /// constant float in [0.5, 2) (variances)
    PosConst(Vec<usize>),
    /// integer input
    Ints(Vec<i64>, Vec<usize>),
    /// boolean input
    Bool(Vec<u8>, Vec<usize>),
    None,
}

/// Values, shape, differentiable.
type Values = (Vec<f64>, Vec<usize>, bool);

struct Case {
    op: &'static str,
    attrs: Vec<AttributeProto>,
    inputs: Vec<In>,
    outputs: usize,
    opset: i64,
    mode: Mode,
}

fn case(op: &'static str, inputs: Vec<In>) -> Case {
    Case {
        op,
        attrs: vec![],
        inputs,
        outputs: 1,
        opset: 17,
        mode: Mode::Eval,
    }
}

impl Case {
    fn attr(mut self, a: AttributeProto) -> Case {
        self.attrs.push(a);
        self
    }
    fn opset(mut self, v: i64) -> Case {
        self.opset = v;
        self
    }
    fn mode(mut self, m: Mode) -> Case {
        self.mode = m;
        self
    }
    fn outputs(mut self, n: usize) -> Case {
        self.outputs = n;
        self
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let v = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn node(c: &Case) -> NodeProto {
    NodeProto {
        op_type: Some(c.op.into()),
        name: Some(format!("{}_test", c.op)),
        input: (0..c.inputs.len())
            .map(|i| {
                if matches!(c.inputs[i], In::None) {
                    String::new()
                } else {
                    format!("in{i}")
                }
            })
            .collect(),
        output: (0..c.outputs).map(|i| format!("out{i}")).collect(),
        attribute: c.attrs.clone(),
        ..Default::default()
    }
}

fn run(c: &Case, node: &NodeProto, inputs: &[Option<Tensor>]) -> Vec<Tensor> {
    let rng = RefCell::new(ChaCha8Rng::seed_from_u64(0));
    let args = OpArgs {
        node,
        inputs: inputs.to_vec(),
        mode: c.mode,
        opset: c.opset,
        dtype: DType::F64,
        device: &Device::Cpu,
        rng: &rng,
        state: RefCell::new(Vec::new()),
    };
    let (domain, name) = c.op.split_once("::").unwrap_or(("", c.op));
    let op =
        super::Op::parse(domain, name).unwrap_or_else(|| panic!("{} is not in the op table", c.op));
    let f = registry()[&op];
    f(&args).unwrap_or_else(|e| panic!("{}: {}", c.op, e.0))
}

fn loss(outs: &[Tensor], weights: &[Tensor]) -> Tensor {
    let mut total = Tensor::zeros((), DType::F64, &Device::Cpu).unwrap();
    for (o, w) in outs.iter().zip(weights) {
        if o.dtype() == DType::F64 {
            total = (total + (o * w).unwrap().sum_all().unwrap()).unwrap();
        }
    }
    total
}

/// Largest gradient error of one case, relative to max(1, |gradient|∞).
fn check(c: &Case, seed: u64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dev = Device::Cpu;
    let mut values: Vec<Option<Values>> = Vec::new();
    let mut fixed: Vec<Option<Tensor>> = Vec::new();
    for i in &c.inputs {
        let (v, shape, diff) = match i {
            In::F(shape, s) => {
                let n: usize = shape.iter().product();
                (
                    (0..n).map(|_| s * normal(&mut rng)).collect(),
                    shape.clone(),
                    true,
                )
            }
            In::Pos(shape) => {
                let n: usize = shape.iter().product();
                (
                    (0..n).map(|_| 0.5 + 1.5 * uniform(&mut rng)).collect(),
                    shape.clone(),
                    true,
                )
            }
            In::PosConst(shape) => {
                let n: usize = shape.iter().product();
                (
                    (0..n).map(|_| 0.5 + 1.5 * uniform(&mut rng)).collect(),
                    shape.clone(),
                    false,
                )
            }
            In::Val(v, shape) => (v.clone(), shape.clone(), false),
            In::Ints(v, shape) => {
                values.push(None);
                fixed.push(Some(
                    Tensor::from_vec(v.clone(), shape.as_slice(), &dev).unwrap(),
                ));
                continue;
            }
            In::Bool(v, shape) => {
                values.push(None);
                fixed.push(Some(
                    Tensor::from_vec(v.clone(), shape.as_slice(), &dev).unwrap(),
                ));
                continue;
            }
            In::None => {
                values.push(None);
                fixed.push(None);
                continue;
            }
        };
        values.push(Some((v, shape, diff)));
        fixed.push(None);
    }
    let node = node(c);
    let build = |values: &[Option<Values>]| -> Vec<Option<Tensor>> {
        values
            .iter()
            .zip(&fixed)
            .map(|(v, f)| match v {
                Some((v, s, _)) => Some(Tensor::from_vec(v.clone(), s.as_slice(), &dev).unwrap()),
                None => f.clone(),
            })
            .collect()
    };
    // autograd
    let vars: Vec<Option<Var>> = build(&values)
        .into_iter()
        .zip(&values)
        .map(|(t, v)| match (t, v) {
            (Some(t), Some((_, _, true))) => Some(Var::from_tensor(&t).unwrap()),
            _ => None,
        })
        .collect();
    let inputs: Vec<Option<Tensor>> = build(&values)
        .into_iter()
        .zip(&vars)
        .map(|(t, v)| v.as_ref().map(|v| v.as_tensor().clone()).or(t))
        .collect();
    let outs = run(c, &node, &inputs);
    let weights: Vec<Tensor> = outs
        .iter()
        .map(|o| {
            let n = o.elem_count();
            let w: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
            Tensor::from_vec(w, o.dims(), &dev).unwrap()
        })
        .collect();
    let l = loss(&outs, &weights);
    let grads = l.backward().unwrap();
    let h = 1e-6;
    let mut worst = 0.0f64;
    for (i, v) in values.iter().enumerate() {
        let Some((vals, _, true)) = v else { continue };
        let var = vars[i].as_ref().unwrap();
        let g: Vec<f64> = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all().unwrap().to_vec1().unwrap(),
            None => vec![0.0; vals.len()],
        };
        let scale = g.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        // at most 48 coordinates per input, spread over the tensor
        let stride = vals.len().div_ceil(48).max(1);
        for j in (0..vals.len()).step_by(stride) {
            let mut plus = values.clone();
            let mut minus = values.clone();
            if let Some((p, _, _)) = plus[i].as_mut() {
                p[j] += h;
            }
            if let Some((m, _, _)) = minus[i].as_mut() {
                m[j] -= h;
            }
            let lp: f64 = loss(&run(c, &node, &build(&plus)), &weights)
                .to_scalar()
                .unwrap();
            let lm: f64 = loss(&run(c, &node, &build(&minus)), &weights)
                .to_scalar()
                .unwrap();
            let fd = (lp - lm) / (2.0 * h);
            let err = (fd - g[j]).abs() / scale;
            if err > worst {
                worst = err;
            }
        }
    }
    worst
}

#[test]
fn every_differentiable_op_has_a_gradient_case() {
    let covered: std::collections::HashSet<&str> = cases().iter().map(|c| c.op).collect();
    let mut missing: Vec<String> = registry()
        .keys()
        .map(|op| op.qualified_name())
        .filter(|op| {
            !NON_DIFFERENTIABLE.contains(&op.as_str())
                && !STRAIGHT_THROUGH.contains(&op.as_str())
                && !covered.contains(op.as_str())
        })
        .collect();
    missing.sort_unstable();
    assert!(missing.is_empty(), "no gradient case for {missing:?}");
}

#[test]
fn gradients_match_finite_differences_in_f64() {
    let mut failures = Vec::new();
    for (k, c) in cases().iter().enumerate() {
        let err = check(c, 1000 + k as u64);
        if err.is_nan() || err >= 1e-6 {
            failures.push(format!(
                "{} (case {k}, {:?}): relative error {err:.2e}",
                c.op, c.mode
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn quantize_passes_the_gradient_straight_through() {
    // forward: clamp(round(x / s) + zp); backward: d/dx (x / s + zp) = 1 / s
    let x = Var::from_tensor(
        &Tensor::new(&[-3.2f64, -0.6, 0.49, 1.5, 2.5, 700.0], &Device::Cpu).unwrap(),
    )
    .unwrap();
    let c = case(
        "QuantizeLinear",
        vec![In::None, scalar(0.5), In::Val(vec![-1.0], vec![])],
    )
    .attr(ai("output_dtype", 3));
    let node = node(&c);
    let inputs = vec![
        Some(x.as_tensor().clone()),
        Some(Tensor::new(0.5f64, &Device::Cpu).unwrap()),
        Some(Tensor::new(-1.0f64, &Device::Cpu).unwrap()),
    ];
    let y = run(&c, &node, &inputs).remove(0);
    let values: Vec<f64> = y.to_vec1().unwrap();
    // round half to even of -6.4, -1.2, 0.98, 3, 5, 1400; -1; int8 clamp
    assert_eq!(values, vec![-7.0, -2.0, 0.0, 2.0, 4.0, 127.0]);
    let grad = y.sum_all().unwrap().backward().unwrap();
    let g: Vec<f64> = grad.get(x.as_tensor()).unwrap().to_vec1().unwrap();
    assert_eq!(g, vec![2.0; 6]);
}
