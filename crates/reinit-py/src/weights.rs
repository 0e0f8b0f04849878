//! Reading a model's weights for `reinit.torch.load_into`: every float
//! initializer of the main graph, decoded, and the nodes that tell how each
//! weight maps onto a torch module (names, transposes).

use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use reinit::Error;
use reinit_onnx::DType;

use crate::{Source, engine, source};

/// One floating-point initializer of the main graph, decoded.
pub struct Weight {
    pub name: String,
    pub dims: Vec<usize>,
    pub values: Values,
}

pub enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// A node of the main graph, reduced to what `reinit.torch` needs.
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub trans_a: i64,
    pub trans_b: i64,
}

/// Every float initializer of the main graph (f64 stays f64, every other float
/// type is widened to f32) and the main graph's nodes.
pub fn read_weights(src: &Source) -> Result<(Vec<Weight>, Vec<Node>), Error> {
    let model = src.load()?;
    let mut weights = Vec::new();
    for id in model.ids() {
        let entry = model.tensor(id);
        if !entry.origin.is_main_initializer() || !entry.dtype.is_float() {
            continue;
        }
        let values = if entry.dtype == DType::F64 {
            Values::F64(model.read_f64(id).map_err(Error::Load)?)
        } else {
            Values::F32(model.read_f32(id).map_err(Error::Load)?)
        };
        weights.push(Weight {
            name: entry.name.clone(),
            dims: entry.dims.clone(),
            values,
        });
    }
    let nodes = model
        .proto()
        .graph
        .as_ref()
        .map(|g| {
            g.node
                .iter()
                .map(|n| {
                    let attr = |name: &str| {
                        n.attribute
                            .iter()
                            .find(|a| a.name.as_deref() == Some(name))
                            .and_then(|a| a.i)
                            .unwrap_or(0)
                    };
                    Node {
                        name: n.name.clone().unwrap_or_default(),
                        op_type: n.op_type.clone().unwrap_or_default(),
                        inputs: n.input.clone(),
                        outputs: n.output.clone(),
                        trans_a: attr("transA"),
                        trans_b: attr("transB"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((weights, nodes))
}

/// Native helper for `reinit.torch`: `({name: ndarray}, [(name, op_type,
/// inputs, outputs, transA, transB)])`. Arrays are built from the decoded vectors
/// without another copy.
#[pyfunction]
pub(crate) fn _weights<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyList>)> {
    let src = source(model)?;
    let (weights, nodes) = engine(py, || read_weights(&src))?;
    let dict = PyDict::new(py);
    for w in weights {
        let array = match w.values {
            Values::F32(v) => PyArray1::from_vec(py, v).reshape(w.dims)?.into_any(),
            Values::F64(v) => PyArray1::from_vec(py, v).reshape(w.dims)?.into_any(),
        };
        dict.set_item(w.name, array)?;
    }
    let list = PyList::empty(py);
    for n in nodes {
        list.append((n.name, n.op_type, n.inputs, n.outputs, n.trans_a, n.trans_b))?;
    }
    Ok((dict, list))
}
