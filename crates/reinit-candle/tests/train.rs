//! Training end to end on the fixtures.

use std::path::PathBuf;

use candle_core::{DType, Device};
use reinit_candle::{
    Executor, Mask, Optimizer, Task, TaskSize, TrainConfig, Verdict, train, train_on,
};
use reinit_onnx::Model;

fn fixture(name: &str) -> Model {
    Model::load(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures")
            .join(name),
    )
    .unwrap()
}

#[test]
fn digits_mlp_reaches_90_percent_heldout_with_default_steps() {
    let report = train(&fixture("mlp_relu.onnx"), &TrainConfig::default()).unwrap();
    eprintln!(
        "digits: loss {:.3} -> {:.3}, heldout {:?}, {:.1}s",
        report.initial_loss, report.final_loss, report.heldout, report.seconds
    );
    assert_eq!(report.task, "digits");
    assert_eq!(report.verdict, Verdict::Trains);
    assert!(
        report.heldout.value >= 0.9,
        "held-out accuracy {}",
        report.heldout.value
    );
}

#[test]
fn tiny_resnet_with_bn_training_and_padded_maxpool_trains() {
    let model = fixture("tiny_resnet_bn.onnx");
    let config = TrainConfig {
        steps: 12,
        batch: 8,
        size: TaskSize {
            train: 64,
            heldout: 16,
        },
        ..TrainConfig::default()
    };
    let report = train(&model, &config).unwrap();
    eprintln!("resnet: {:?} {:.1}s", report.loss, report.seconds);
    assert_eq!(report.task, "image-patterns");
    assert!(!report.micro_batch);
    assert_eq!(report.verdict, Verdict::Trains, "loss {:?}", report.loss);
}

#[test]
fn masked_weights_stay_exact_zeros() {
    let model = fixture("mlp_tanh.onnx");
    let exec = Executor::new(&model, &Device::Cpu).unwrap();
    // hold every other weight of each layer at zero
    let mut mask = Mask::new();
    for layer in exec.layers() {
        let n = exec.param(&layer.weight).unwrap().var.elem_count();
        mask.insert(layer.weight.clone(), (0..n).map(|i| i % 2 == 0).collect());
    }
    for optimizer in [Optimizer::AdamW, Optimizer::Sgd { momentum: 0.9 }] {
        let exec = Executor::new(&model, &Device::Cpu).unwrap();
        let config = TrainConfig {
            steps: 10,
            batch: 16,
            lr: 1e-2,
            optimizer,
            mask: Some(mask.clone()),
            size: TaskSize {
                train: 128,
                heldout: 32,
            },
            ..TrainConfig::default()
        };
        let task = Task::for_model(&exec, &model, 0, config.size, None).unwrap();
        let report = train_on(&exec, &task, &config).unwrap();
        assert_eq!(report.mask_exact, Some(true));
        for (name, keep) in &mask {
            let v: Vec<f32> = exec
                .param(name)
                .unwrap()
                .var
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(v.iter().zip(keep).all(|(x, &k)| k || *x == 0.0), "{name}");
            assert!(v.iter().zip(keep).any(|(x, &k)| k && *x != 0.0), "{name}");
        }
    }
}

#[test]
fn every_fixture_gets_a_task_and_one_training_step() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let mut failures = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    names.sort();
    for path in names {
        let model = Model::load(&path).unwrap();
        let config = TrainConfig {
            steps: 2,
            batch: 4,
            size: TaskSize {
                train: 8,
                heldout: 4,
            },
            ..TrainConfig::default()
        };
        // helper_matmul_w_left takes X as [features, samples] (MatMul(W, X)):
        // it has no batch axis, so each sample is the whole static input.
        match train(&model, &config) {
            Ok(r) => eprintln!(
                "{}: {} {:?} micro={}",
                path.display(),
                r.task,
                r.loss,
                r.micro_batch
            ),
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
