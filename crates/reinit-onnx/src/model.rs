//! [`Model`]: a decoded ONNX model that remembers where every tensor's bytes are.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;
use prost::Message;

use crate::codec::{self, DType, Storage};
use crate::error::Error;
use crate::external::{self, ExternalFiles, ExternalRef};
use crate::index::{self, MetadataSite, SiteKind, TensorSite};
use crate::proto::{ModelProto, TensorProto};

/// Index of a tensor in [`Model::tensors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub usize);

/// Where a tensor sits in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorOrigin {
    /// A graph initializer. `graph` is the path of graphs from `"main"` down
    /// through subgraph attributes (`"If_3/then_branch"`).
    Initializer { graph: Vec<String> },
    /// A tensor attribute of a node, e.g. a `Constant`'s `value`.
    NodeAttribute {
        graph: Vec<String>,
        node_index: usize,
        node: String,
        op_type: String,
        attr: String,
    },
}

impl TensorOrigin {
    pub fn graph(&self) -> &[String] {
        match self {
            TensorOrigin::Initializer { graph } | TensorOrigin::NodeAttribute { graph, .. } => {
                graph
            }
        }
    }

    /// True for initializers of the top-level graph.
    pub fn is_main_initializer(&self) -> bool {
        matches!(self, TensorOrigin::Initializer { graph } if graph.len() == 1)
    }
}

/// One tensor of the model: its name, type, shape and storage.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    /// The initializer name, or for a node attribute the node's first output
    /// (the name consumers use).
    pub name: String,
    pub dims: Vec<usize>,
    pub dtype: DType,
    pub storage: Storage,
    pub origin: TensorOrigin,
    pub(crate) proto: TensorProto,
}

impl TensorEntry {
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// Size of the payload in bytes (values × element size).
    pub fn byte_len(&self) -> usize {
        self.numel() * self.dtype.size().unwrap_or(0)
    }
}

/// A loaded model. Cheap to keep around: the file is memory-mapped and tensor
/// payloads are borrowed from the mapping, never copied until read.
#[derive(Debug)]
pub struct Model {
    path: PathBuf,
    base_dir: Option<PathBuf>,
    bytes: Bytes,
    proto: ModelProto,
    tensors: Vec<TensorEntry>,
    pub(crate) sites: Vec<TensorSite>,
    pub(crate) metadata: Vec<MetadataSite>,
    pub(crate) external: ExternalFiles,
    /// The input file's mapping (when loaded from a file), to release pages
    /// that have been consumed.
    map: Option<Arc<Mmap>>,
}

/// Lets `Bytes` borrow from a mapping that the model also keeps a handle to.
struct SharedMap(Arc<Mmap>);

impl AsRef<[u8]> for SharedMap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Model {
    /// Loads a model file; external data is resolved against its directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, Error> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::invalid(path, "not a regular file"));
        }
        let map = if meta.len() == 0 {
            None
        } else {
            // SAFETY: read-only mapping; we never write to the input file (saves go
            // through a temporary file and a rename, which leaves this inode alone).
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            Some(Arc::new(map))
        };
        let bytes = map
            .clone()
            .map_or_else(Bytes::new, |m| Bytes::from_owner(SharedMap(m)));
        let dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let mut model = Model::decode(path.to_path_buf(), Some(dir.to_path_buf()), bytes)?;
        model.map = map;
        Ok(model)
    }

    /// Decodes a model from memory. `base_dir` anchors external data; without
    /// one, a model that refers to external data is refused.
    pub fn from_bytes(bytes: impl Into<Bytes>, base_dir: Option<&Path>) -> Result<Model, Error> {
        Model::decode(
            PathBuf::from("<memory>"),
            base_dir.map(Path::to_path_buf),
            bytes.into(),
        )
    }

    fn decode(path: PathBuf, base_dir: Option<PathBuf>, bytes: Bytes) -> Result<Model, Error> {
        if bytes.is_empty() {
            return Err(Error::invalid(&path, "the file is empty"));
        }
        let proto = ModelProto::decode(bytes.clone())
            .map_err(|e| Error::invalid(&path, format!("protobuf decode failed: {e}")))?;
        if proto.graph.is_none() {
            return Err(Error::invalid(&path, "the model has no graph"));
        }
        let index = index::index_model(&bytes).map_err(|e| Error::invalid(&path, e))?;
        let mut model = Model {
            path,
            base_dir,
            bytes,
            proto,
            tensors: Vec::with_capacity(index.tensors.len()),
            sites: Vec::new(),
            metadata: index.metadata,
            external: ExternalFiles::default(),
            map: None,
        };
        for site in index.tensors {
            let entry = model.describe(&site)?;
            model.tensors.push(entry);
            model.sites.push(site);
        }
        Ok(model)
    }

    /// Decodes one tensor message and checks that its declared size is backed
    /// by bytes actually present, before anything is allocated for it.
    fn describe(&mut self, site: &TensorSite) -> Result<TensorEntry, Error> {
        let proto = TensorProto::decode(self.bytes.slice(site.message()))
            .map_err(|e| Error::invalid(&self.path, format!("tensor decode failed: {e}")))?;
        let (origin, name) = match &site.kind {
            SiteKind::Initializer => (
                TensorOrigin::Initializer {
                    graph: site.graph.clone(),
                },
                proto.name.clone().unwrap_or_default(),
            ),
            SiteKind::NodeAttribute {
                node_index,
                node_name,
                op_type,
                output,
                attr,
            } => (
                TensorOrigin::NodeAttribute {
                    graph: site.graph.clone(),
                    node_index: *node_index,
                    node: node_name.clone(),
                    op_type: op_type.clone(),
                    attr: attr.clone(),
                },
                if op_type == "Constant" && !output.is_empty() {
                    output.clone()
                } else {
                    proto.name.clone().unwrap_or_else(|| output.clone())
                },
            ),
        };
        let path = self.path.clone();
        let fail = |reason: String| Error::Tensor {
            path: path.clone(),
            tensor: name.clone(),
            reason,
        };
        let dims = proto
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| fail(format!("negative dimension {d}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let numel = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| fail(format!("dimensions {dims:?} overflow")))?;
        let dtype = DType::from_onnx(proto.data_type.unwrap_or(0));
        let byte_len = dtype
            .size()
            .map(|s| {
                numel
                    .checked_mul(s)
                    .ok_or_else(|| fail("size overflows".into()))
            })
            .transpose()?;
        let storage = if proto.data_location == Some(1) {
            let reference = ExternalRef::parse(&proto.external_data).map_err(|reason| {
                Error::UnsafeExternal {
                    path: path.clone(),
                    tensor: name.clone(),
                    location: external_location(&proto),
                    reason,
                }
            })?;
            self.check_external(&name, &reference, byte_len)?;
            Storage::External(reference)
        } else {
            storage_of(&proto, dtype)
        };
        let held = match &storage {
            Storage::Raw => proto.raw_data.as_ref().map(|r| r.len()),
            Storage::FloatData => Some(proto.float_data.len() * 4),
            Storage::DoubleData => Some(proto.double_data.len() * 8),
            Storage::Int32Data => Some(proto.int32_data.len() * dtype.size().unwrap_or(4)),
            Storage::Int64Data => Some(proto.int64_data.len() * dtype.size().unwrap_or(8)),
            Storage::Empty => Some(0),
            Storage::External(_) | Storage::OtherTyped => None,
        };
        if let (Some(held), Some(expected)) = (held, byte_len)
            && held != expected
        {
            return Err(fail(format!(
                "dims {dims:?} of {dtype} need {expected} bytes, {} holds {held}",
                storage.name()
            )));
        }
        Ok(TensorEntry {
            name,
            dims,
            dtype,
            storage,
            origin,
            proto,
        })
    }

    fn check_external(
        &mut self,
        tensor: &str,
        reference: &ExternalRef,
        byte_len: Option<usize>,
    ) -> Result<(), Error> {
        let refuse = |reason: String| Error::UnsafeExternal {
            path: self.path.clone(),
            tensor: tensor.to_string(),
            location: reference.location.clone(),
            reason,
        };
        let base = self.base_dir.clone().ok_or_else(|| {
            refuse("a model read from memory has no directory for external data".into())
        })?;
        let map = self
            .external
            .map(&base, &reference.location)
            .map_err(refuse)?;
        let range = external::byte_range(reference, map.len() as u64).map_err(refuse)?;
        if let Some(expected) = byte_len
            && range.len() != expected
        {
            return Err(refuse(format!(
                "holds {} bytes, the tensor's dims need {expected}",
                range.len()
            )));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory external data is resolved against.
    pub fn base_dir(&self) -> Option<&Path> {
        self.base_dir.as_deref()
    }

    /// The decoded protobuf (graph, nodes, attributes, metadata).
    pub fn proto(&self) -> &ModelProto {
        &self.proto
    }

    /// The model's bytes exactly as read.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    pub fn tensor(&self, id: TensorId) -> &TensorEntry {
        &self.tensors[id.0]
    }

    pub fn ids(&self) -> impl Iterator<Item = TensorId> + '_ {
        (0..self.tensors.len()).map(TensorId)
    }

    /// The tensor named `name`, preferring the main graph's initializers.
    pub fn find_tensor(&self, name: &str) -> Option<TensorId> {
        let mut found = self.ids().filter(|&id| self.tensor(id).name == name);
        let first = found.next()?;
        if self.tensor(first).origin.is_main_initializer() {
            return Some(first);
        }
        std::iter::once(first)
            .chain(found)
            .find(|&id| self.tensor(id).origin.is_main_initializer())
            .or(Some(first))
    }

    /// The stored bytes of an externally stored tensor.
    fn external_bytes(&self, entry: &TensorEntry, reference: &ExternalRef) -> Result<&[u8], Error> {
        let map: &Arc<Mmap> = self
            .external
            .get(&reference.location)
            .ok_or_else(|| self.tensor_error(entry, "external data file was not opened".into()))?;
        let range = external::byte_range(reference, map.len() as u64)
            .map_err(|reason| self.tensor_error(entry, reason))?;
        Ok(&map[range])
    }

    /// The little-endian payload of a raw or external tensor, borrowed.
    pub fn raw_bytes(&self, id: TensorId) -> Result<Option<&[u8]>, Error> {
        let entry = self.tensor(id);
        Ok(match &entry.storage {
            Storage::Raw => entry.proto.raw_data.as_deref(),
            Storage::External(reference) => Some(self.external_bytes(entry, reference)?),
            _ => None,
        })
    }

    /// All values as f64 (exact for every numeric type up to 2^53).
    pub fn read_f64(&self, id: TensorId) -> Result<Vec<f64>, Error> {
        let entry = self.tensor(id);
        let p = &entry.proto;
        let values = match &entry.storage {
            Storage::Raw => {
                let bytes = self.raw_bytes(id)?.unwrap_or_default();
                let values = codec::decode_le(bytes, entry.dtype);
                // copied out: the mapped pages need not stay resident (a
                // trainer that reads every weight once would otherwise hold
                // the whole file beside its own copy)
                self.release_bytes(bytes);
                values
            }
            Storage::External(reference) => {
                let values = codec::decode_le(self.raw_bytes(id)?.unwrap_or_default(), entry.dtype);
                self.release_external(reference);
                values
            }
            Storage::FloatData => Some(p.float_data.iter().map(|&v| v as f64).collect()),
            Storage::DoubleData => Some(p.double_data.clone()),
            Storage::Int32Data => Some(match entry.dtype {
                DType::F16 | DType::BF16 => codec::decode_half_bits(&p.int32_data, entry.dtype),
                _ => p.int32_data.iter().map(|&v| v as f64).collect(),
            }),
            Storage::Int64Data => Some(p.int64_data.iter().map(|&v| v as f64).collect()),
            Storage::Empty => Some(Vec::new()),
            Storage::OtherTyped => None,
        };
        values.ok_or_else(|| {
            self.tensor_error(
                entry,
                format!("cannot read {} values as numbers", entry.dtype),
            )
        })
    }

    /// Visits the stored little-endian bytes of a `raw_data` or external
    /// tensor in pieces of at most `chunk` whole values, releasing the pages
    /// as they are consumed; `false` (nothing visited) for the other
    /// storages. A ragged payload or an error from `visit` names the tensor.
    /// For statistics over tensors larger than memory comfortably holds.
    pub fn visit_le(
        &self,
        id: TensorId,
        chunk: usize,
        mut visit: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<bool, Error> {
        let entry = self.tensor(id);
        let Some(bytes) = self.raw_bytes(id)? else {
            return Ok(false);
        };
        let size = entry
            .dtype
            .size()
            .filter(|size| bytes.len().is_multiple_of(*size))
            .ok_or_else(|| {
                self.tensor_error(entry, format!("cannot read {} values", entry.dtype))
            })?;
        let piece_len = chunk.max(1) * size;
        for (i, piece) in bytes.chunks(piece_len).enumerate() {
            visit(piece).map_err(|reason| self.tensor_error(entry, reason))?;
            self.release_bytes(piece);
            if let Storage::External(reference) = &entry.storage
                && let Some(map) = self.external.get(&reference.location)
                && let Ok(range) = external::byte_range(reference, map.len() as u64)
            {
                let start = range.start + i * piece_len;
                crate::save::release(map, start..start + piece.len());
            }
        }
        Ok(true)
    }

    /// Drops the pages behind `slice` from the resident set, when it lies in
    /// the input file's mapping (they are read back from the file if needed).
    pub(crate) fn release_bytes(&self, slice: &[u8]) {
        let (Some(map), Some(start)) = (&self.map, self.offset_of(slice)) else {
            return;
        };
        crate::save::release(map, start..start + slice.len());
    }

    /// Where `slice` starts in the model's bytes, if it is part of them.
    fn offset_of(&self, slice: &[u8]) -> Option<usize> {
        let base = self.bytes.as_ptr() as usize;
        let start = (slice.as_ptr() as usize).checked_sub(base)?;
        (start + slice.len() <= self.bytes.len()).then_some(start)
    }

    /// Drops the pages of an external tensor from the resident set once its
    /// values have been copied out (large models stream through memory).
    fn release_external(&self, reference: &ExternalRef) {
        if let Some(map) = self.external.get(&reference.location)
            && let Ok(range) = external::byte_range(reference, map.len() as u64)
        {
            crate::save::release(map, range);
        }
    }

    /// All values as f32.
    pub fn read_f32(&self, id: TensorId) -> Result<Vec<f32>, Error> {
        Ok(self.read_f64(id)?.into_iter().map(|v| v as f32).collect())
    }

    /// Integer tensors exactly (shape tensors, indices).
    pub fn read_i64(&self, id: TensorId) -> Result<Vec<i64>, Error> {
        let entry = self.tensor(id);
        let p = &entry.proto;
        let values = match &entry.storage {
            Storage::Raw | Storage::External(_) => {
                codec::decode_le_i64(self.raw_bytes(id)?.unwrap_or_default(), entry.dtype)
            }
            Storage::Int64Data => Some(p.int64_data.clone()),
            Storage::Int32Data => Some(p.int32_data.iter().map(|&v| v as i64).collect()),
            Storage::Empty => Some(Vec::new()),
            Storage::OtherTyped if !p.uint64_data.is_empty() => {
                Some(p.uint64_data.iter().map(|&v| v as i64).collect())
            }
            _ => None,
        };
        values.ok_or_else(|| {
            self.tensor_error(
                entry,
                format!("cannot read {} values as integers", entry.dtype),
            )
        })
    }

    pub(crate) fn tensor_error(&self, entry: &TensorEntry, reason: String) -> Error {
        Error::Tensor {
            path: self.path.clone(),
            tensor: entry.name.clone(),
            reason,
        }
    }

    /// Value of a `metadata_props` entry.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.proto
            .metadata_props
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .and_then(|e| e.value.as_deref())
    }
}

fn storage_of(proto: &TensorProto, dtype: DType) -> Storage {
    if proto.raw_data.is_some() {
        Storage::Raw
    } else if !proto.float_data.is_empty() {
        if dtype == DType::F32 {
            Storage::FloatData
        } else {
            Storage::OtherTyped
        }
    } else if !proto.double_data.is_empty() {
        if dtype == DType::F64 {
            Storage::DoubleData
        } else {
            Storage::OtherTyped
        }
    } else if !proto.int32_data.is_empty() {
        Storage::Int32Data
    } else if !proto.int64_data.is_empty() {
        Storage::Int64Data
    } else if proto.uint64_data.is_empty() && proto.string_data.is_empty() {
        Storage::Empty
    } else {
        Storage::OtherTyped
    }
}

fn external_location(proto: &TensorProto) -> String {
    proto
        .external_data
        .iter()
        .find(|e| e.key.as_deref() == Some("location"))
        .and_then(|e| e.value.clone())
        .unwrap_or_default()
}
