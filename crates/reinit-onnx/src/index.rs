//! Locates every tensor in a serialized model: where its message sits, which
//! length-prefixed ancestors enclose it, and where its payload fields are. The
//! save path uses these positions to splice, instead of re-encoding the model.

use std::ops::Range;

use crate::wire::{self, Field, LEN};

/// A length-delimited field enclosing (or being) a tensor.
#[derive(Debug, Clone)]
pub(crate) struct LenField {
    pub prefix: Range<usize>,
    pub payload: Range<usize>,
}

/// Where a tensor was found in the graph hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SiteKind {
    Initializer,
    /// Attribute `attr` of node `node_index` (a `Constant`'s `value`, or any TENSOR attribute).
    NodeAttribute {
        node_index: usize,
        node_name: String,
        op_type: String,
        /// The node's first output: the value name consumers refer to.
        output: String,
        attr: String,
    },
}

/// One external-data key/value entry inside a tensor.
#[derive(Debug, Clone)]
pub(crate) struct ExternalEntry {
    pub key: String,
    /// The whole value field (tag, length, bytes), or an empty range at the end
    /// of the entry when the value is absent.
    pub value_field: Range<usize>,
    /// The entry message itself (so that we can rewrite the value length).
    pub entry: LenField,
}

#[derive(Debug, Clone)]
pub(crate) struct TensorSite {
    /// Path of graphs from the main graph, e.g. `["main", "If_0/then_branch"]`.
    pub graph: Vec<String>,
    pub kind: SiteKind,
    /// Enclosing LEN fields, outermost first; the last one is the tensor itself.
    pub ancestors: Vec<LenField>,
    /// Payload-carrying fields of the tensor, by field number.
    pub payload_fields: Vec<Field>,
    pub external: Vec<ExternalEntry>,
}

impl TensorSite {
    pub fn message(&self) -> Range<usize> {
        self.ancestors
            .last()
            .map(|a| a.payload.clone())
            .unwrap_or(0..0)
    }
}

/// Field numbers we walk through (onnx-ml.proto).
mod num {
    pub const MODEL_GRAPH: u32 = 7;
    pub const MODEL_METADATA: u32 = 14;
    pub const GRAPH_NODE: u32 = 1;
    pub const GRAPH_INITIALIZER: u32 = 5;
    pub const NODE_OUTPUT: u32 = 2;
    pub const NODE_NAME: u32 = 3;
    pub const NODE_OP_TYPE: u32 = 4;
    pub const NODE_ATTRIBUTE: u32 = 5;
    pub const ATTR_NAME: u32 = 1;
    pub const ATTR_T: u32 = 5;
    pub const ATTR_G: u32 = 6;
    pub const ATTR_TENSORS: u32 = 10;
    pub const ATTR_GRAPHS: u32 = 11;
    pub const TENSOR_FLOAT: u32 = 4;
    pub const TENSOR_INT32: u32 = 5;
    pub const TENSOR_INT64: u32 = 7;
    pub const TENSOR_RAW: u32 = 9;
    pub const TENSOR_DOUBLE: u32 = 10;
    pub const TENSOR_EXTERNAL: u32 = 13;
    pub const ENTRY_KEY: u32 = 1;
    pub const ENTRY_VALUE: u32 = 2;
}
pub(crate) use num::{
    ENTRY_VALUE, MODEL_METADATA, TENSOR_DOUBLE, TENSOR_FLOAT, TENSOR_INT32, TENSOR_RAW,
};

/// A `metadata_props` entry of the model.
#[derive(Debug, Clone)]
pub(crate) struct MetadataSite {
    pub key: String,
    /// As in [`ExternalEntry::value_field`].
    pub value_field: Range<usize>,
    pub entry: LenField,
}

#[derive(Debug, Default)]
pub(crate) struct ModelIndex {
    pub tensors: Vec<TensorSite>,
    pub metadata: Vec<MetadataSite>,
}

/// Subgraphs may nest (If inside Loop inside If); real models stay shallow.
/// The limit keeps a hostile file from exhausting the stack.
const MAX_GRAPH_DEPTH: usize = 64;

pub(crate) fn index_model(buf: &[u8]) -> Result<ModelIndex, String> {
    let mut index = ModelIndex::default();
    for field in wire::fields(buf, 0..buf.len()) {
        let field = field?;
        match (field.number, field.wire_type) {
            (num::MODEL_GRAPH, LEN) => {
                let ancestors = vec![len_field(&field)];
                walk_graph(buf, &field, ancestors, vec!["main".into()], &mut index)?;
            }
            (num::MODEL_METADATA, LEN) => {
                let (key, value_field) = entry_key_value(buf, &field)?;
                index.metadata.push(MetadataSite {
                    key,
                    value_field,
                    entry: len_field(&field),
                });
            }
            _ => {}
        }
    }
    Ok(index)
}

fn len_field(field: &Field) -> LenField {
    LenField {
        prefix: field
            .len_prefix
            .clone()
            .unwrap_or(field.value.start..field.value.start),
        payload: field.value.clone(),
    }
}

fn walk_graph(
    buf: &[u8],
    graph: &Field,
    ancestors: Vec<LenField>,
    path: Vec<String>,
    index: &mut ModelIndex,
) -> Result<(), String> {
    if path.len() > MAX_GRAPH_DEPTH {
        return Err(format!("subgraphs nested deeper than {MAX_GRAPH_DEPTH}"));
    }
    let mut node_index = 0;
    for field in wire::fields(buf, graph.value.clone()) {
        let field = field?;
        if field.wire_type != LEN {
            continue;
        }
        let mut chain = ancestors.clone();
        chain.push(len_field(&field));
        match field.number {
            num::GRAPH_INITIALIZER => {
                index.tensors.push(tensor_site(
                    buf,
                    &field,
                    chain,
                    path.clone(),
                    SiteKind::Initializer,
                )?);
            }
            num::GRAPH_NODE => {
                walk_node(buf, &field, chain, &path, node_index, index)?;
                node_index += 1;
            }
            _ => {}
        }
    }
    Ok(())
}

fn walk_node(
    buf: &[u8],
    node: &Field,
    ancestors: Vec<LenField>,
    path: &[String],
    node_index: usize,
    index: &mut ModelIndex,
) -> Result<(), String> {
    let (mut node_name, mut op_type, mut output) = (String::new(), String::new(), None);
    for field in wire::fields(buf, node.value.clone()) {
        let field = field?;
        if field.wire_type != LEN {
            continue;
        }
        let text = || String::from_utf8_lossy(&buf[field.value.clone()]).into_owned();
        match field.number {
            num::NODE_NAME => node_name = text(),
            num::NODE_OP_TYPE => op_type = text(),
            num::NODE_OUTPUT if output.is_none() => output = Some(text()),
            _ => {}
        }
    }
    let output = output.unwrap_or_default();
    let label = if node_name.is_empty() {
        format!("{op_type}#{node_index}")
    } else {
        node_name.clone()
    };
    for field in wire::fields(buf, node.value.clone()) {
        let field = field?;
        if field.number != num::NODE_ATTRIBUTE || field.wire_type != LEN {
            continue;
        }
        let mut chain = ancestors.clone();
        chain.push(len_field(&field));
        let attr_name = attribute_name(buf, &field)?;
        for inner in wire::fields(buf, field.value.clone()) {
            let inner = inner?;
            if inner.wire_type != LEN {
                continue;
            }
            let mut inner_chain = chain.clone();
            inner_chain.push(len_field(&inner));
            match inner.number {
                num::ATTR_T | num::ATTR_TENSORS => {
                    let kind = SiteKind::NodeAttribute {
                        node_index,
                        node_name: node_name.clone(),
                        op_type: op_type.clone(),
                        output: output.clone(),
                        attr: attr_name.clone(),
                    };
                    index
                        .tensors
                        .push(tensor_site(buf, &inner, inner_chain, path.to_vec(), kind)?);
                }
                num::ATTR_G | num::ATTR_GRAPHS => {
                    let mut sub = path.to_vec();
                    sub.push(format!("{label}/{attr_name}"));
                    walk_graph(buf, &inner, inner_chain, sub, index)?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn attribute_name(buf: &[u8], attr: &Field) -> Result<String, String> {
    for field in wire::fields(buf, attr.value.clone()) {
        let field = field?;
        if field.number == num::ATTR_NAME && field.wire_type == LEN {
            return Ok(String::from_utf8_lossy(&buf[field.value]).into_owned());
        }
    }
    Ok(String::new())
}

fn tensor_site(
    buf: &[u8],
    tensor: &Field,
    ancestors: Vec<LenField>,
    graph: Vec<String>,
    kind: SiteKind,
) -> Result<TensorSite, String> {
    let mut payload_fields = Vec::new();
    let mut external = Vec::new();
    for field in wire::fields(buf, tensor.value.clone()) {
        let field = field?;
        match field.number {
            num::TENSOR_FLOAT
            | num::TENSOR_INT32
            | num::TENSOR_INT64
            | num::TENSOR_RAW
            | num::TENSOR_DOUBLE => payload_fields.push(field),
            num::TENSOR_EXTERNAL if field.wire_type == LEN => {
                let (key, value_field) = entry_key_value(buf, &field)?;
                external.push(ExternalEntry {
                    key,
                    value_field,
                    entry: len_field(&field),
                });
            }
            _ => {}
        }
    }
    Ok(TensorSite {
        graph,
        kind,
        ancestors,
        payload_fields,
        external,
    })
}

/// Key and value range of a `StringStringEntryProto`.
fn entry_key_value(buf: &[u8], entry: &Field) -> Result<(String, Range<usize>), String> {
    let mut key = String::new();
    let mut value = entry.value.end..entry.value.end;
    for field in wire::fields(buf, entry.value.clone()) {
        let field = field?;
        match (field.number, field.wire_type) {
            (num::ENTRY_KEY, LEN) => key = String::from_utf8_lossy(&buf[field.value]).into_owned(),
            (num::ENTRY_VALUE, LEN) => value = field.start..field.value.end,
            _ => {}
        }
    }
    Ok((key, value))
}
