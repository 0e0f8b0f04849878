//! Criterion benches: orthogonal (Haar via faer QR), EOI (Givens to density 0.1), He
//! normal on 25 M values, a 3072 × 768 banded orthogonal weight in both stored orders, and
//! the bulk normal fill on one thread in each stream version
//! (`normal_fill/4M_1thread_v1|v2`: divide by 2^22 for nanoseconds per value). Compare with `python3 benches/schemes_numpy.py` (same sizes).
//! `REINIT_BENCH_4096=1` adds the slow n = 4096 orthogonal case.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use reinit_schemes::{
    Law, LayerSpec, Scheme, Stream, StreamVersion, WeightValues, haar_orthogonal, init_layer,
    init_layer_lazy, sparse_orthogonal,
};
use std::hint::black_box;
use std::time::Duration;

fn orthogonal(c: &mut Criterion) {
    let mut g = c.benchmark_group("orthogonal");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    let mut sizes = vec![256, 1024, 2048];
    if std::env::var_os("REINIT_BENCH_4096").is_some() {
        sizes.push(4096);
    }
    for n in sizes {
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let mut s = Stream::new(0, "bench", "orthogonal");
            b.iter(|| black_box(haar_orthogonal(n, n, 1.0, &mut s)))
        });
    }
    g.finish();
}

/// A BERT-base FFN weight (3072 × 768) produced band by band in either stored order: the
/// canonical one (rows of Q: Gram pass + triangular solve) and the transposed one a
/// `MatMul(X, W)` weight streams in (rows of Qᵀ: Gram pass + two groups of products with
/// L⁻¹). Two threads, as the rewrite's pool on this machine.
fn orthogonal_banded(c: &mut Criterion) {
    let mut g = c.benchmark_group("orthogonal_banded_3072x768");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a two-thread pool");
    let spec = LayerSpec::linear(3072, 768).with_bias(false);
    let scheme: Scheme = "orthogonal".parse().expect("known scheme");
    for (order, transposed) in [("rows_of_q", false), ("rows_of_qt", true)] {
        g.bench_function(order, |b| {
            b.iter(|| {
                pool.install(|| {
                    let mut s = Stream::new(0, "bench", "orthogonal");
                    let init = init_layer_lazy(&scheme, &spec, &mut s).expect("valid layer");
                    let WeightValues::Orthogonal(bands) = init.weight else {
                        panic!("3072 × 768 takes the banded route");
                    };
                    let mut sum = 0.0;
                    bands
                        .for_each_stored(transposed, |piece| {
                            sum += piece[0];
                            Ok::<(), ()>(())
                        })
                        .expect("no error");
                    black_box(sum)
                })
            })
        });
    }
    g.finish();
}

fn eoi(c: &mut Criterion) {
    let mut g = c.benchmark_group("eoi_d0.1");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    for n in [1024, 4096] {
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let mut s = Stream::new(0, "bench", "eoi");
            b.iter(|| black_box(sparse_orthogonal(n, n, 0.1, &mut s)))
        });
    }
    g.finish();
}

fn he(c: &mut Criterion) {
    let mut g = c.benchmark_group("he_normal");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    // 25 M values: a 5000 × 5000 linear layer
    let spec = LayerSpec::linear(5000, 5000).with_bias(false);
    let scheme: Scheme = "he".parse().expect("known scheme");
    g.bench_function("25M", |b| {
        let mut s = Stream::new(0, "bench", "he");
        b.iter(|| black_box(init_layer(&scheme, &spec, &mut s).expect("valid layer")))
    });
    g.finish();
}

fn normal_fill(c: &mut Criterion) {
    let mut g = c.benchmark_group("normal_fill");
    g.sample_size(10).warm_up_time(Duration::from_millis(500));
    let n = 1 << 22;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let mut out = vec![0.0; n];
    for version in StreamVersion::ALL {
        let fill = Stream::versioned(version, 1, "w", "he").iid(Law::Normal { std: 1.0 }, n);
        g.bench_function(format!("4M_1thread_{version}"), |b| {
            b.iter(|| pool.install(|| fill.fill_at(0, black_box(&mut out))))
        });
        let fill =
            Stream::versioned(version, 1, "w", "he").iid(Law::Uniform { lo: -1.0, hi: 1.0 }, n);
        g.bench_function(format!("4M_1thread_uniform_{version}"), |b| {
            b.iter(|| pool.install(|| fill.fill_at(0, black_box(&mut out))))
        });
    }
    g.finish();
}

criterion_group!(benches, orthogonal, orthogonal_banded, eoi, he, normal_fill);
criterion_main!(benches);
