//! Times one training step (forward + backward + AdamW) of an ONNX model.
//!
//!     cargo build -p reinit-candle --example train_step
//!     RAYON_NUM_THREADS=1 target/debug/examples/train_step fixtures/tiny_resnet_bn.onnx 32 10
//!
//! Prints the median of N timed steps after 2 warm-up steps. Threads: candle
//! uses `RAYON_NUM_THREADS` (default: all cores).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::optim::ParamsAdamW;
use reinit_candle::optim::AdamW;
use reinit_candle::{Executor, Mode, Rng};
use reinit_onnx::Model;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("fixtures/tiny_resnet_bn.onnx");
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let steps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let model = Model::load(path)?;
    let exec = Executor::new(&model, &Device::Cpu)?;
    let spec = &exec.inputs()[0];
    let mut shape = vec![batch];
    shape.extend(spec.dims.iter().skip(1).map(|d| d.unwrap_or(1)));
    let numel: usize = shape.iter().product();
    let mut rng = Rng::new(0);
    let x = Tensor::from_vec(rng.normals(numel), shape.as_slice(), &Device::Cpu)?;
    let labels: Vec<u32> = (0..batch).map(|i| (i % 10) as u32).collect();
    let y = Tensor::from_vec(labels, batch, &Device::Cpu)?;
    let mut opt = AdamW::new(
        exec.trainable_vars(),
        ParamsAdamW {
            lr: 1e-3,
            ..Default::default()
        },
    )?;
    let inputs = [(spec.name.clone(), x)].into_iter().collect();
    let mut times = Vec::new();
    let (mut fwd, mut bwd) = (Vec::new(), Vec::new());
    for i in 0..steps + 2 {
        let t0 = Instant::now();
        let out = exec.forward(&inputs, Mode::Train)?.first().clone();
        let loss = candle_nn::loss::cross_entropy(&out.to_dtype(DType::F32)?, &y)?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        opt.step(&grads)?;
        if i >= 2 {
            times.push(t0.elapsed().as_secs_f64());
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "{path} batch {batch}: train step median {:.4} s (forward {:.4} s, backward {:.4} s) over {steps} steps",
        median(&mut times),
        median(&mut fwd),
        median(&mut bwd)
    );
    Ok(())
}
