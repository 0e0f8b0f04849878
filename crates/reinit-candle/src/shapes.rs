//! Input shapes for `verify`: the user's `--input-shape` request (parsed here,
//! so that a malformed one is a usage error listing the accepted forms) and
//! the defaults for every dimension a model leaves dynamic, so that ordinary
//! exports (dynamic batch, sequence or H/W axes) run without being asked.
//! The result, one [`InputShape`] per graph input with where each size came
//! from and what the input is filled with, is recorded in the report.

use std::collections::HashMap;

use reinit_onnx::Model;

/// Shown with every `--input-shape` error.
pub const ACCEPTED_FORMS: &str = "accepted forms: per-sample dims of the first input \
`3x224x224`, the same with the batch first `2x3x224x224`, or named inputs \
`input_ids:2x128,pixel_values:2x3x224x224` (each per-sample or with the batch)";

/// Sequence length given to dynamic axes of token inputs (and of float
/// sequence inputs `[batch, seq, hidden]`).
pub const DEFAULT_SEQUENCE: usize = 128;
/// Image side for dynamic H/W of inputs with ImageNet-like channel counts (1, 3, 4).
pub const DEFAULT_IMAGE_SIDE: usize = 224;
/// Image side for dynamic H/W of inputs with other channel counts.
pub const DEFAULT_FEATURE_MAP_SIDE: usize = 32;
/// Depth (frames) for dynamic D of 5-D video inputs `[N, C, D, H, W]`.
pub const DEFAULT_FRAMES: usize = 16;
/// H/W of 5-D video inputs (R3D / R(2+1)D take 112×112 clips).
pub const DEFAULT_VIDEO_SIDE: usize = 112;

/// `--input-shape` as given: dims by input name (`None` = the main input).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShapeRequest {
    pub entries: Vec<ShapeEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeEntry {
    pub input: Option<String>,
    pub dims: Vec<usize>,
}

impl std::str::FromStr for ShapeRequest {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        ShapeRequest::parse(text)
    }
}

impl ShapeRequest {
    /// Parses `3x224x224`, `2x3x224x224` or `a:2x128,b:2x3x224x224`; the error
    /// names what is wrong and lists [`ACCEPTED_FORMS`].
    pub fn parse(text: &str) -> Result<ShapeRequest, String> {
        let fail = |why: String| format!("--input-shape `{text}`: {why}; {ACCEPTED_FORMS}");
        let mut entries = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(fail("empty entry".into()));
            }
            // Names may contain ':' (`onnx::x`), dims never do.
            let (input, dims) = match part.rsplit_once(':') {
                Some((name, dims)) if !name.trim().is_empty() => {
                    (Some(name.trim().to_string()), dims)
                }
                Some(_) => return Err(fail(format!("`{part}` has no input name before ':'"))),
                None => (None, part),
            };
            let dims = dims
                .split(['x', 'X', '×'])
                .map(|d| match d.trim().parse::<usize>() {
                    Ok(v) if v > 0 => Ok(v),
                    _ => Err(fail(format!(
                        "`{}` is not a positive integer dimension",
                        d.trim()
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            entries.push(ShapeEntry { input, dims });
        }
        if entries.len() > 1 && entries.iter().any(|e| e.input.is_none()) {
            return Err(fail(
                "with several entries, each needs its input name".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for e in &entries {
            if let Some(n) = &e.input
                && !seen.insert(n.clone())
            {
                return Err(fail(format!("input `{n}` is given twice")));
            }
        }
        Ok(ShapeRequest { entries })
    }
}

/// One graph input as `verify` feeds it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InputShape {
    pub name: String,
    /// ONNX element type as the model declares it (`float32`, `int64`, `bool`, …).
    pub dtype: String,
    /// One training batch: `[batch, per-sample dims…]`.
    pub shape: Vec<usize>,
    /// Where each axis' size came from, axis by axis: `batch`, `model`,
    /// `--input-shape`, or `default: …` with the rule used.
    pub sources: Vec<String>,
    /// What the input holds: `task data`, `ones (attention mask)`,
    /// `zeros (token type ids)`, `positions 0..n-1`, `zeros`, `true`.
    pub fill: String,
}

impl InputShape {
    /// Per-sample dims (the shape without its batch axis).
    pub fn sample(&self) -> &[usize] {
        &self.shape[1..]
    }
    /// True when any size was chosen by a default rule.
    pub fn defaulted(&self) -> bool {
        self.sources.iter().any(|s| s.starts_with("default"))
    }
}

/// How a non-task input is filled, from its name and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    TaskData,
    Ones,
    Positions,
    Zeros,
    True,
}

impl Fill {
    pub fn describe(self, name: &str) -> String {
        match self {
            Fill::TaskData => "task data".into(),
            Fill::Ones => "ones (attention mask)".into(),
            Fill::Positions => "positions 0..n-1".into(),
            Fill::Zeros if is_token_type(name) => "zeros (token type ids)".into(),
            Fill::Zeros => "zeros".into(),
            Fill::True => "true".into(),
        }
    }
}

fn is_token_type(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("token_type") || n.contains("segment")
}

/// The fill of an auxiliary input (not the one that carries the task data).
pub fn aux_fill(name: &str, dtype: reinit_onnx::DType) -> Fill {
    let n = name.to_ascii_lowercase();
    if dtype == reinit_onnx::DType::Bool {
        Fill::True
    } else if n.contains("mask") {
        Fill::Ones
    } else if n.contains("position") {
        Fill::Positions
    } else {
        Fill::Zeros
    }
}

/// True for inputs that are masks, positions or segment ids rather than data.
fn is_auxiliary(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("mask") || n.contains("position") || is_token_type(name)
}

/// A graph input as declared: dims (`None` = dynamic) with their symbolic names.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredInput {
    pub name: String,
    pub dtype: reinit_onnx::DType,
    /// `None` when the model declares no shape at all.
    pub dims: Option<Vec<DeclaredDim>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeclaredDim {
    Fixed(usize),
    /// Dynamic, with its symbolic name if any (`batch`, `sequence`, …).
    Dynamic(Option<String>),
}

/// The graph inputs that are not initializers, in graph order.
pub fn declared_inputs(model: &Model) -> Vec<DeclaredInput> {
    use reinit_onnx::proto::tensor_shape_proto::dimension::Value as Dim;
    use reinit_onnx::proto::type_proto::Value as Ty;
    let Some(graph) = model.proto().graph.as_ref() else {
        return Vec::new();
    };
    let inits: std::collections::HashSet<&str> = graph
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    graph
        .input
        .iter()
        .filter(|v| !inits.contains(v.name.as_deref().unwrap_or("")))
        .map(|v| {
            let mut dtype = reinit_onnx::DType::F32;
            let mut dims = None;
            if let Some(Ty::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                dtype = reinit_onnx::DType::from_onnx(t.elem_type.unwrap_or(1));
                dims = t.shape.as_ref().map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(Dim::DimValue(v)) if *v > 0 => DeclaredDim::Fixed(*v as usize),
                            Some(Dim::DimParam(p)) if !p.is_empty() => {
                                DeclaredDim::Dynamic(Some(p.clone()))
                            }
                            _ => DeclaredDim::Dynamic(None),
                        })
                        .collect()
                });
            }
            DeclaredInput {
                name: v.name.clone().unwrap_or_default(),
                dtype,
                dims,
            }
        })
        .collect()
}

/// Index of the input that carries the task data: the first one that is not
/// a mask, position or segment input (the first input if all are).
pub fn main_input(inputs: &[DeclaredInput]) -> usize {
    inputs
        .iter()
        .position(|i| !is_auxiliary(&i.name))
        .unwrap_or(0)
}

/// Every input's shape for training batches of `batch`, and the batch a
/// full-form request implies (`2x3x224x224` → 2).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedInputs {
    pub inputs: Vec<InputShape>,
    /// Index of the input that carries the task data.
    pub main: usize,
    pub batch_from_request: Option<usize>,
}

fn dtype_name(d: reinit_onnx::DType) -> String {
    format!("{d:?}").to_lowercase()
}

/// Resolves every input's shape: the request first, then symbolic dims shared
/// with a resolved input, then the default rules. Errors (for a usage message)
/// name the input and list what can be given.
pub fn resolve_inputs(
    declared: &[DeclaredInput],
    request: Option<&ShapeRequest>,
    batch: usize,
) -> Result<ResolvedInputs, String> {
    let main = main_input(declared);
    let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
    let mut given: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut batch_from_request = None;
    for entry in request.map(|r| r.entries.as_slice()).unwrap_or_default() {
        let idx = match &entry.input {
            None => main,
            Some(n) => names.iter().position(|x| x == n).ok_or_else(|| {
                format!(
                    "--input-shape names `{n}`, which is not a graph input (inputs: {}); {ACCEPTED_FORMS}",
                    names.join(", ")
                )
            })?,
        };
        if declared.is_empty() {
            return Err("the graph has no inputs".into());
        }
        let input = &declared[idx];
        let rank = input.dims.as_ref().map(Vec::len);
        let (b, sample) = match rank {
            Some(r) if entry.dims.len() == r && r >= 1 => {
                (Some(entry.dims[0]), entry.dims[1..].to_vec())
            }
            Some(r) if entry.dims.len() + 1 == r => (None, entry.dims.clone()),
            None => (None, entry.dims.clone()),
            Some(r) => {
                return Err(format!(
                    "--input-shape gives {} dims for input `{}` of rank {r}: give {} (per sample) or {r} (with the batch); {ACCEPTED_FORMS}",
                    entry.dims.len(),
                    input.name,
                    r.saturating_sub(1)
                ));
            }
        };
        if let Some(b) = b {
            match batch_from_request {
                Some(prev) if prev != b => {
                    return Err(format!(
                        "--input-shape gives batch {prev} and {b}: every input has the same batch"
                    ));
                }
                _ => batch_from_request = Some(b),
            }
        }
        given.insert(idx, sample);
    }
    let batch = batch_from_request.unwrap_or(batch);

    // Symbolic dims bound by the request carry over to the inputs sharing them.
    let mut bound: HashMap<String, usize> = HashMap::new();
    for (&idx, sample) in &given {
        if let Some(dims) = &declared[idx].dims {
            for (d, &v) in dims.iter().skip(1).zip(sample) {
                if let DeclaredDim::Dynamic(Some(p)) = d {
                    bound.entry(p.clone()).or_insert(v);
                }
            }
        }
    }

    // The main input first, so that its defaults bind shared names for the others.
    let mut order: Vec<usize> = vec![main];
    order.extend((0..declared.len()).filter(|&i| i != main));
    let mut out: Vec<Option<InputShape>> = vec![None; declared.len()];
    for idx in order {
        let input = &declared[idx];
        let fill = if idx == main {
            Fill::TaskData
        } else {
            aux_fill(&input.name, input.dtype)
        };
        let mut shape = vec![batch];
        let mut sources = vec!["batch".to_string()];
        if let Some(sample) = given.get(&idx) {
            shape.extend_from_slice(sample);
            sources.extend(sample.iter().map(|_| "--input-shape".to_string()));
        } else if let Some(dims) = &input.dims {
            for axis in 1..dims.len() {
                let (v, src) = match &dims[axis] {
                    DeclaredDim::Fixed(v) => (*v, "model".to_string()),
                    DeclaredDim::Dynamic(p) => {
                        match p.as_ref().and_then(|p| bound.get(p).map(|v| (p, *v))) {
                            Some((p, v)) => (v, format!("default: same as `{p}` elsewhere")),
                            None => {
                                let (v, rule) = default_dim(input, dims, axis)?;
                                if let Some(p) = p {
                                    bound.insert(p.clone(), v);
                                }
                                (v, format!("default: {rule}"))
                            }
                        }
                    }
                };
                shape.push(v);
                sources.push(src);
            }
        }
        out[idx] = Some(InputShape {
            name: input.name.clone(),
            dtype: dtype_name(input.dtype),
            shape,
            sources,
            fill: fill.describe(&input.name),
        });
    }
    Ok(ResolvedInputs {
        inputs: out.into_iter().map(|s| s.expect("every input")).collect(),
        main,
        batch_from_request,
    })
}

/// The default size of dynamic axis `axis` (≥ 1) of `input`, and the rule's name.
fn default_dim(
    input: &DeclaredInput,
    dims: &[DeclaredDim],
    axis: usize,
) -> Result<(usize, String), String> {
    let fixed = |i: usize| match dims.get(i) {
        Some(DeclaredDim::Fixed(v)) => Some(*v),
        _ => None,
    };
    let ask = |what: &str| {
        format!(
            "input `{}` leaves its {what} (axis {axis}) dynamic and reinit has no default for it; \
             give it, e.g. --input-shape {}:{}",
            input.name,
            input.name,
            dims.iter()
                .enumerate()
                .skip(1)
                .map(|(i, d)| match d {
                    DeclaredDim::Fixed(v) => v.to_string(),
                    _ if i == axis => "N".into(),
                    _ => "?".into(),
                })
                .collect::<Vec<_>>()
                .join("x")
        )
    };
    if !input.dtype.is_float() {
        return Ok((
            DEFAULT_SEQUENCE,
            format!("sequence length {DEFAULT_SEQUENCE}"),
        ));
    }
    match dims.len() {
        // [N, seq, hidden] or [N, C, L]
        3 => Ok((
            DEFAULT_SEQUENCE,
            format!("sequence length {DEFAULT_SEQUENCE}"),
        )),
        4 => match axis {
            1 => Ok((3, "3 channels".into())),
            _ => {
                let other = fixed(if axis == 2 { 3 } else { 2 });
                if let Some(v) = other {
                    return Ok((v, "square, like the other image side".into()));
                }
                match fixed(1) {
                    Some(1 | 3 | 4) | None => Ok((
                        DEFAULT_IMAGE_SIDE,
                        format!("image side {DEFAULT_IMAGE_SIDE} (ImageNet-like channels)"),
                    )),
                    Some(_) => Ok((
                        DEFAULT_FEATURE_MAP_SIDE,
                        format!("image side {DEFAULT_FEATURE_MAP_SIDE} (not an RGB-like input)"),
                    )),
                }
            }
        },
        5 => match axis {
            1 => Ok((3, "3 channels".into())),
            2 => Ok((DEFAULT_FRAMES, format!("{DEFAULT_FRAMES} frames"))),
            _ => {
                let other = fixed(if axis == 3 { 4 } else { 3 });
                Ok(match other {
                    Some(v) => (v, "square, like the other image side".into()),
                    None => (
                        DEFAULT_VIDEO_SIDE,
                        format!("video frame side {DEFAULT_VIDEO_SIDE}"),
                    ),
                })
            }
        },
        2 => Err(ask("feature size")),
        _ => Err(ask("size")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reinit_onnx::DType;

    fn input(name: &str, dtype: DType, dims: &[Option<&str>]) -> DeclaredInput {
        // "7" → fixed 7, "" → unnamed dynamic, other text → named dynamic
        DeclaredInput {
            name: name.into(),
            dtype,
            dims: Some(
                dims.iter()
                    .map(|d| match d {
                        Some(t) => match t.parse::<usize>() {
                            Ok(v) => DeclaredDim::Fixed(v),
                            Err(_) => DeclaredDim::Dynamic(Some(t.to_string())),
                        },
                        None => DeclaredDim::Dynamic(None),
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn parses_the_three_forms() {
        let r = ShapeRequest::parse("3x224x224").unwrap();
        assert_eq!(
            r.entries,
            vec![ShapeEntry {
                input: None,
                dims: vec![3, 224, 224]
            }]
        );
        let r = ShapeRequest::parse("2x3x224x224").unwrap();
        assert_eq!(r.entries[0].dims, vec![2, 3, 224, 224]);
        let r = ShapeRequest::parse("input_ids:2x128, pixel_values:2x3x224x224").unwrap();
        assert_eq!(r.entries[0].input.as_deref(), Some("input_ids"));
        assert_eq!(r.entries[1].dims, vec![2, 3, 224, 224]);
        let r = ShapeRequest::parse("onnx::x:8").unwrap();
        assert_eq!(r.entries[0].input.as_deref(), Some("onnx::x"));
    }

    #[test]
    fn malformed_requests_show_the_accepted_forms() {
        for bad in [
            "", "3x", "3x-1", "0x224", "a:", ":3x3", "3x3,a:2", "a:2,a:3", "3*224",
        ] {
            let e = ShapeRequest::parse(bad).unwrap_err();
            assert!(e.contains(ACCEPTED_FORMS), "{bad}: {e}");
        }
    }

    #[test]
    fn dynamic_image_dims_default_to_224_and_batch_from_the_caller() {
        let d = [input(
            "x",
            DType::F32,
            &[Some("N"), Some("3"), Some("H"), Some("W")],
        )];
        let r = resolve_inputs(&d, None, 2).unwrap();
        assert_eq!(r.inputs[0].shape, vec![2, 3, 224, 224]);
        assert_eq!(r.inputs[0].sources[1], "model");
        assert!(r.inputs[0].sources[2].starts_with("default: image side 224"));
        // one side fixed: square
        let d = [input("x", DType::F32, &[None, Some("3"), Some("96"), None])];
        assert_eq!(
            resolve_inputs(&d, None, 1).unwrap().inputs[0].shape,
            vec![1, 3, 96, 96]
        );
        // non-RGB channel count: small feature maps
        let d = [input("x", DType::F32, &[None, Some("16"), None, None])];
        assert_eq!(
            resolve_inputs(&d, None, 1).unwrap().inputs[0].shape,
            vec![1, 16, 32, 32]
        );
    }

    #[test]
    fn token_inputs_get_sequence_128_and_share_it_with_masks() {
        let d = [
            input("input_ids", DType::I64, &[Some("batch"), Some("seq")]),
            input("attention_mask", DType::I64, &[Some("batch"), Some("seq")]),
            input("token_type_ids", DType::I64, &[Some("batch"), Some("seq")]),
            input("position_ids", DType::I64, &[Some("batch"), Some("seq")]),
        ];
        let r = resolve_inputs(&d, None, 2).unwrap();
        assert_eq!(r.main, 0);
        for i in &r.inputs {
            assert_eq!(i.shape, vec![2, 128], "{}", i.name);
        }
        let fills: Vec<&str> = r.inputs.iter().map(|i| i.fill.as_str()).collect();
        assert_eq!(
            fills,
            [
                "task data",
                "ones (attention mask)",
                "zeros (token type ids)",
                "positions 0..n-1"
            ]
        );
        // a request on one input binds the shared symbolic length for the others
        let req = ShapeRequest::parse("input_ids:4x64").unwrap();
        let r = resolve_inputs(&d, Some(&req), 2).unwrap();
        assert_eq!(r.batch_from_request, Some(4));
        assert!(r.inputs.iter().all(|i| i.shape == vec![4, 64]));
    }

    #[test]
    fn the_data_input_is_not_a_mask_even_when_the_mask_comes_first() {
        let d = [
            input("attention_mask", DType::I64, &[None, None]),
            input("input_ids", DType::I64, &[None, None]),
        ];
        let r = resolve_inputs(&d, None, 1).unwrap();
        assert_eq!(r.main, 1);
        assert_eq!(r.inputs[1].fill, "task data");
    }

    #[test]
    fn requests_are_checked_against_the_model() {
        let d = [input("x", DType::F32, &[None, Some("3"), None, None])];
        let per_sample = ShapeRequest::parse("3x64x64").unwrap();
        let r = resolve_inputs(&d, Some(&per_sample), 5).unwrap();
        assert_eq!(r.inputs[0].shape, vec![5, 3, 64, 64]);
        assert_eq!(r.batch_from_request, None);
        let wrong_rank = ShapeRequest::parse("64x64").unwrap();
        let e = resolve_inputs(&d, Some(&wrong_rank), 5).unwrap_err();
        assert!(e.contains("rank 4") && e.contains(ACCEPTED_FORMS), "{e}");
        let unknown = ShapeRequest::parse("y:3x8x8").unwrap();
        let e = resolve_inputs(&d, Some(&unknown), 5).unwrap_err();
        assert!(e.contains("`y`") && e.contains("inputs: x"), "{e}");
        // a dynamic feature axis has no sensible default: ask for it
        let d = [input("x", DType::F32, &[None, None])];
        let e = resolve_inputs(&d, None, 1).unwrap_err();
        assert!(e.contains("--input-shape x:N"), "{e}");
    }
}
