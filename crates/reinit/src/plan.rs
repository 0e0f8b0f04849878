//! Planning: which weights a run touches, with which scheme and why. A plan is
//! decided from the model's structure alone; applying it is a pure function of
//! (model, plan, seed).

use regex::Regex;
use reinit_graph::Analysis;
use reinit_onnx::{Model, TensorId};
use reinit_schemes::{
    Density, DensityDistribution, EoiParams, LayerSpec, NormOptions, Scheme, StreamVersion,
};

use crate::calibration::Calibration;
use crate::error::Error;
use crate::params::SchemeParams;
use crate::rules::Rule;
use crate::spec;

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// A scheme name, or `auto`.
    pub scheme: String,
    pub params: SchemeParams,
    pub rules: Vec<Rule>,
    pub only: Option<Regex>,
    pub exclude: Option<Regex>,
    /// Scheme for layers the chosen scheme does not cover; `None` keeps them.
    pub fallback: Option<String>,
    pub norms: NormOptions,
    /// The data LSUV's data pass calibrates on.
    pub calibration: Calibration,
    /// Which random stream the weights are drawn from (`--stream`; docs/stream.md).
    pub stream: StreamVersion,
}

/// One weight the plan rewrites.
#[derive(Debug, Clone)]
pub struct PlannedWeight {
    pub tensor: TensorId,
    pub name: String,
    pub node: String,
    /// Index into [`Analysis::layers`] (the weight's first use).
    pub layer: usize,
    pub role: String,
    pub scheme: Scheme,
    /// Scheme used when `scheme` turns out not to cover this layer.
    pub fallback: Option<Scheme>,
    pub spec: LayerSpec,
    pub reason: String,
}

/// A norm layer whose parameters the plan sets.
#[derive(Debug, Clone)]
pub struct PlannedNorm {
    pub node: String,
    pub op: reinit_graph::NormKind,
    pub scale: TensorId,
    pub bias: Option<TensorId>,
    /// BatchNormalization's running statistics.
    pub running_mean: Option<TensorId>,
    pub running_var: Option<TensorId>,
    pub after_branch_last: bool,
    /// The run's scheme (`None` when it plans no weight), for zero-init-last.
    pub scheme: Option<Scheme>,
    /// `--reset-norms` (or `auto`): γ = 1, β = 0, mean 0, variance 1, unless
    /// zero-init-last zeroes γ.
    pub reset: bool,
}

/// A weight left as it is, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Kept {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub analysis: Analysis,
    pub weights: Vec<PlannedWeight>,
    pub norms: Vec<PlannedNorm>,
    pub kept: Vec<Kept>,
    pub warnings: Vec<String>,
    pub options: PlanOptions,
}

/// Analyzes `model` and decides a scheme for every weight layer.
pub fn plan(model: &Model, options: &PlanOptions) -> Result<Plan, Error> {
    let analysis = reinit_graph::analyze(model);
    plan_with(model, analysis, options)
}

pub fn plan_with(model: &Model, analysis: Analysis, options: &PlanOptions) -> Result<Plan, Error> {
    // Parameters that do not apply are usage errors at the CLI edge (strict
    // parsing there); here they may be shared by several schemes (verify).
    let auto = options.scheme == "auto";
    let main = (!auto)
        .then(|| options.params.scheme(&options.scheme, false))
        .transpose()?;
    let fallback = options
        .fallback
        .as_deref()
        .map(|name| options.params.scheme(name, false))
        .transpose()?;
    let mut weights: Vec<PlannedWeight> = Vec::new();
    let mut kept = Vec::new();
    let mut warnings = analysis.warnings.clone();
    for (index, layer) in analysis.layers.iter().enumerate() {
        if weights.iter().any(|w| w.tensor == layer.weight)
            || kept.iter().any(|k: &Kept| k.name == layer.weight_name)
        {
            continue; // a shared weight is planned once, from its first use
        }
        let name = &layer.weight_name;
        let filtered = |re: &Regex| re.is_match(name) || re.is_match(&layer.node);
        if options.only.as_ref().is_some_and(|re| !filtered(re)) {
            kept.push(Kept {
                name: name.clone(),
                reason: "not matched by --only".into(),
            });
            continue;
        }
        if options.exclude.as_ref().is_some_and(filtered) {
            kept.push(Kept {
                name: name.clone(),
                reason: "matched by --exclude".into(),
            });
            continue;
        }
        if !model.tensor(layer.weight).dtype.is_float() {
            kept.push(Kept {
                name: name.clone(),
                reason: format!(
                    "{} weights cannot be rewritten",
                    model.tensor(layer.weight).dtype
                ),
            });
            continue;
        }
        let (scheme, reason) = match options
            .rules
            .iter()
            .position(|r| r.matches(name, &layer.node))
        {
            Some(i) => {
                let rule = &options.rules[i];
                if rule.scheme == "keep" {
                    kept.push(Kept {
                        name: name.clone(),
                        reason: format!("rule {} says keep", i + 1),
                    });
                    continue;
                }
                let params = options.params.merged(&rule.params);
                if rule.scheme == "auto" {
                    let (chosen, why) = crate::auto::choose(&analysis, index);
                    (
                        crate::auto::params(chosen, &params).scheme(chosen, false)?,
                        format!("rule {}: auto: {why}", i + 1),
                    )
                } else {
                    (
                        params.scheme(&rule.scheme, false)?,
                        format!("rule {} ({})", i + 1, rule.pattern),
                    )
                }
            }
            None => match &main {
                Some(scheme) => (*scheme, "--scheme".to_string()),
                None => {
                    let (chosen, why) = crate::auto::choose(&analysis, index);
                    (
                        crate::auto::params(chosen, &options.params).scheme(chosen, false)?,
                        format!("auto: {why}"),
                    )
                }
            },
        };
        let spec = spec::layer_spec(&analysis, index);
        if matches!(scheme, Scheme::ReluShare(_)) && spec.chain.is_none() {
            let why = match &analysis.chain {
                Err(e) => e.clone(),
                Ok(chain) => {
                    let mut why: Vec<String> = chain
                        .steps
                        .iter()
                        .filter_map(|s| match &s.next {
                            Some(reinit_graph::Link::Blocked(r)) => Some(r.clone()),
                            _ => None,
                        })
                        .collect();
                    why.extend(spec::pairing_breaks(&analysis));
                    why.join("; ")
                }
            };
            match fallback {
                Some(fb) => {
                    warnings.push(format!(
                        "{name}: relu-share needs a plain ReLU chain ({why}); using fallback {}",
                        fb.name()
                    ));
                    weights.push(planned(
                        layer,
                        index,
                        fb,
                        None,
                        spec,
                        format!("fallback: relu-share not applicable: {why}"),
                    ));
                }
                None => kept.push(Kept {
                    name: name.clone(),
                    reason: format!("relu-share not applicable: {why} (--fallback keep)"),
                }),
            }
            continue;
        }
        weights.push(planned(layer, index, scheme, fallback, spec, reason));
    }
    for skipped in &analysis.skipped {
        kept.push(Kept {
            name: skipped.name.clone(),
            reason: skipped.reason.clone(),
        });
    }
    for embedding in &analysis.embeddings {
        if !weights.iter().any(|w| w.tensor == embedding.weight) {
            kept.push(Kept {
                name: embedding.weight_name.clone(),
                reason: "embedding table (no scheme targets embeddings)".into(),
            });
        }
    }
    set_layer_densities(&mut weights)?;
    let norms = plan_norms(&analysis, &weights, options);
    Ok(Plan {
        analysis,
        weights,
        norms,
        kept,
        warnings,
        options: options.clone(),
    })
}

fn planned(
    layer: &reinit_graph::Layer,
    index: usize,
    scheme: Scheme,
    fallback: Option<Scheme>,
    spec: LayerSpec,
    reason: String,
) -> PlannedWeight {
    PlannedWeight {
        tensor: layer.weight,
        name: layer.weight_name.clone(),
        node: layer.node.clone(),
        layer: index,
        role: spec::role(layer),
        scheme,
        fallback,
        spec,
        reason,
    }
}

/// Sparse schemes' per-layer densities (EOI, random-mask) depend on every layer of that
/// scheme in the model (ERK): resolve them now so each layer can be filled on its own.
fn set_layer_densities(weights: &mut [PlannedWeight]) -> Result<(), Error> {
    let mut done = vec![false; weights.len()];
    for first in 0..weights.len() {
        let scheme = weights[first].scheme;
        let Some((density, distribution)) = scheme.sparsity() else {
            continue;
        };
        if done[first] || distribution == DensityDistribution::Uniform {
            continue;
        }
        // Every layer of the same scheme and parameters shares the distribution.
        let group: Vec<usize> = (first..weights.len())
            .filter(|&i| weights[i].scheme == scheme)
            .collect();
        let specs: Vec<LayerSpec> = group.iter().map(|&i| weights[i].spec.clone()).collect();
        let spread = EoiParams {
            density,
            distribution,
            ..EoiParams::default()
        };
        let densities = reinit_schemes::layer_densities(&specs, &spread);
        for (&i, d) in group.iter().zip(densities) {
            done[i] = true;
            let layer_density = Density::of_scheme(scheme.name(), d.clamp(1e-6, 1.0))
                .map_err(|e| Error::Usage(e.to_string()))?;
            weights[i].scheme = scheme.at_layer_density(layer_density);
            weights[i]
                .reason
                .push_str(&format!(" (layer density {d:.4} from {distribution:?})"));
        }
    }
    Ok(())
}

/// Whether the run resets every norm: `--reset-norms`, or `--scheme auto`
/// (the papers assume γ = 1, β = 0; an export of a trained model has not).
pub fn resets_norms(options: &PlanOptions) -> bool {
    options.norms.reset || options.scheme == "auto"
}

fn plan_norms(
    analysis: &Analysis,
    weights: &[PlannedWeight],
    options: &PlanOptions,
) -> Vec<PlannedNorm> {
    let reset = resets_norms(options);
    if !options.norms.zero_init_last_gamma && !reset {
        return Vec::new();
    }
    let scheme = weights.first().map(|w| w.scheme);
    analysis
        .norms
        .iter()
        .filter_map(|n| {
            Some(PlannedNorm {
                node: n.node.clone(),
                op: n.op,
                scale: n.scale?,
                bias: n.bias,
                running_mean: n.running_mean,
                running_var: n.running_var,
                after_branch_last: n.ends_residual_branch.is_some(),
                scheme,
                reset,
            })
        })
        .filter(|n| {
            n.reset
                || (n.after_branch_last && n.scheme.is_some() && options.norms.zero_init_last_gamma)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Model {
        Model::load(format!(
            "{}/../../fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn options(scheme: &str) -> PlanOptions {
        PlanOptions {
            scheme: scheme.into(),
            ..Default::default()
        }
    }

    #[test]
    fn auto_follows_the_roles() {
        let model = fixture("tiny_resnet_bn.onnx");
        let plan = plan(&model, &options("auto")).unwrap();
        for w in &plan.weights {
            let layer = &plan.analysis.layers[w.layer];
            let expected = match layer.residual {
                Some(r) if r.role != reinit_graph::Role::Shortcut => "idinit",
                _ if layer.kernel.iter().product::<usize>() > 1 => "delta-orthogonal",
                _ => "orthogonal",
            };
            assert_eq!(w.scheme.name(), expected, "{}: {}", w.name, w.reason);
        }
        let plan = plan_fn(&fixture("mlp_relu.onnx"), "auto");
        assert!(plan.weights.iter().all(|w| w.scheme.name() == "relu-share"));
        // auto promises isometry: the orthogonal submatrix, unless --submatrix says otherwise
        let submatrix = |w: &PlannedWeight| match w.scheme {
            Scheme::ReluShare(p) => p.submatrix,
            other => panic!("{other}"),
        };
        assert!(
            plan.weights
                .iter()
                .all(|w| submatrix(w) == reinit_schemes::Submatrix::Orthogonal)
        );
        let mut gaussian = options("auto");
        gaussian.params.set("submatrix", "gaussian").unwrap();
        let plan = super::plan(&fixture("mlp_relu.onnx"), &gaussian).unwrap();
        assert!(
            plan.weights
                .iter()
                .all(|w| submatrix(w) == reinit_schemes::Submatrix::Gaussian)
        );
        let plan = plan_fn(&fixture("mlp_tanh.onnx"), "auto");
        let critical = plan
            .weights
            .iter()
            .filter(|w| w.scheme.name() == "critical")
            .count();
        assert_eq!(
            critical,
            plan.weights.len() - 1,
            "every tanh layer gets critical, the head orthogonal"
        );
    }

    fn plan_fn(model: &Model, scheme: &str) -> Plan {
        plan(model, &options(scheme)).unwrap()
    }

    #[test]
    fn only_exclude_and_rules_select_weights() {
        let model = fixture("tiny_resnet_bn.onnx");
        let mut opts = options("he");
        opts.only = Some(Regex::new("^layer2").unwrap());
        opts.exclude = Some(Regex::new("downsample").unwrap());
        let p = plan(&model, &opts).unwrap();
        assert!(!p.weights.is_empty());
        assert!(
            p.weights
                .iter()
                .all(|w| w.name.starts_with("layer2") && !w.name.contains("downsample"))
        );
        assert!(
            p.kept
                .iter()
                .any(|k| k.name.contains("downsample") && k.reason.contains("--exclude"))
        );

        let mut opts = options("he");
        opts.rules = crate::parse_rules("[[rule]]\npattern = '^fc'\nscheme = 'keep'\n[[rule]]\npattern = 'layer1'\nscheme = 'eoi'\ndensity = 0.5\n").unwrap();
        let p = plan(&model, &opts).unwrap();
        assert!(p.weights.iter().all(|w| !w.name.starts_with("fc")));
        let eoi: Vec<_> = p
            .weights
            .iter()
            .filter(|w| w.name.starts_with("layer1"))
            .collect();
        assert!(!eoi.is_empty());
        assert!(
            eoi.iter()
                .all(|w| matches!(w.scheme, Scheme::Eoi(e) if e.density.get() == 0.5))
        );
    }

    #[test]
    fn relu_share_outside_a_relu_chain_falls_back_or_keeps() {
        let model = fixture("tiny_resnet_bn.onnx");
        let kept = plan(&model, &options("relu-share")).unwrap();
        assert!(kept.weights.is_empty());
        assert!(kept.kept.iter().all(|k| !k.reason.is_empty()));
        let mut opts = options("relu-share");
        opts.fallback = Some("he".into());
        let fell_back = plan(&model, &opts).unwrap();
        assert!(!fell_back.weights.is_empty());
        assert!(fell_back.weights.iter().all(|w| w.scheme.name() == "he"));
    }

    #[test]
    fn applying_is_independent_of_the_thread_count() {
        // Structured weights are drawn in windows whose size depends on the
        // pool; the values must not.
        let model = fixture("tiny_transformer.onnx");
        for scheme in ["orthogonal", "eoi", "he"] {
            let p = plan(&model, &options(scheme)).unwrap();
            let run = |threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    crate::Session::new(&model, &p, 9)
                        .unwrap()
                        .to_bytes()
                        .unwrap()
                        .1
                })
            };
            assert!(run(1) == run(3), "{scheme}");
            let other = crate::Session::new(&model, &p, 10)
                .unwrap()
                .to_bytes()
                .unwrap()
                .1;
            assert!(
                other != run(1),
                "{scheme}: a different seed gives different weights"
            );
        }
    }
}
