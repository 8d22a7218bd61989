//! The GGUF reader: every count and range checked against the file before use
//! (../shared/docs/format.md §1).
//!
//! [`GgufFile::open`] parses the header (metadata and tensor table) from ordinary checked
//! reads of the file, never through a mapping, so a file truncated while it is parsed gives
//! an error rather than a bus error. The loading paths read tensor data the same way
//! ([`GgufFile::read_tensor_into`], [`GgufFile::read_tensor_range`]) and report a file that
//! shrank, grew or was cut short since `open` as [`ErrorKind::FileChanged`]. The file is also
//! mapped, for zero-copy views ([`GgufFile::tensor_data`], [`GgufFile::bytes`]); touching
//! those views after the file was truncated is the one remaining way to fault (the usual
//! mmap caveat).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use graph::DType;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::types::dtype_from_ggml;
use crate::value::{Array, Value, ValueType};

/// Default data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest array nesting we accept.
const MAX_ARRAY_DEPTH: usize = 8;
/// Longest tensor name ggml accepts (63 bytes plus a terminator).
const MAX_NAME_LEN: usize = 63;
/// Largest alignment we accept.
const MAX_ALIGNMENT: u64 = 1 << 20;
/// Most entries reserved before they are read. Counts come from the file: one that passes
/// the bytes-left cap can still be a lie, and reserving for it would cost several times the
/// file size (a KV pair takes 13 bytes on disk but ~56 in memory). Longer tables grow as
/// their entries are actually read.
const MAX_PREALLOC: u64 = 4096;

/// Largest value of a hyperparameter that is a width or a count (`embedding_length`,
/// `feed_forward_length`, head counts, `context_length`, `vocab_size`): keeps the
/// arithmetic on them far from overflow. Writers (`synth`) check against it before writing.
pub const MAX_DIM: u64 = 1 << 24;
/// Most transformer layers (`block_count`) a model may have.
pub const MAX_LAYERS: u64 = 4096;
/// Bytes read from the file at a time while parsing the header.
const HEADER_CHUNK: usize = 1 << 20;

/// Capacity to reserve for a table of `count` entries read from the file.
fn prealloc(count: u64) -> usize {
    count.min(MAX_PREALLOC) as usize
}

/// One tensor's entry in the tensor-info table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// ggml's `ne`, innermost (contiguous) first.
    pub ne: Vec<u64>,
    /// The GGUF type id as stored.
    pub ggml_type: u32,
    /// Our dtype for it.
    pub dtype: DType,
    /// Offset relative to the data section.
    pub offset: u64,
    /// Absolute file offset of the data.
    pub abs_offset: u64,
    /// Size of the data in bytes.
    pub nbytes: u64,
}

impl TensorInfo {
    /// Shape outermost first (our convention), e.g. a weight `[n_out, n_in]`.
    pub fn shape(&self) -> Vec<usize> {
        shape_from_ne(&self.ne)
    }

    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// Reverses ggml's `ne` (innermost first) into our shape order (outermost first). This is
/// the one place where the reversal happens.
pub fn shape_from_ne(ne: &[u64]) -> Vec<usize> {
    ne.iter().rev().map(|&d| d as usize).collect()
}

enum Storage {
    /// A file: read with `pread` for parsing and loading, and mapped for zero-copy views.
    File(MappedFile),
    /// Bytes in memory ([`GgufFile::from_bytes`]).
    Owned(Vec<u8>),
}

struct MappedFile {
    map: memmap2::Mmap,
    file: File,
    /// The path as given, for messages.
    path: String,
    /// The length at open; every later read checks it still holds.
    len: u64,
}

impl MappedFile {
    fn changed(&self, msg: impl Into<String>) -> Error {
        ErrorKind::FileChanged { path: self.path.clone(), msg: msg.into() }.into()
    }

    /// Reads `dst.len()` bytes at `offset`, failing with [`ErrorKind::FileChanged`] when the
    /// file's length differs from the one at open or the read comes up short.
    fn read_at(&self, dst: &mut [u8], offset: u64) -> Result<()> {
        let now = self.file.metadata().map_err(|e| io_error(&self.path, e))?.len();
        if now != self.len {
            return Err(self.changed(format!("it is now {now} bytes, it was {} when opened", self.len)));
        }
        read_exact_at(&self.file, dst, offset).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => self.changed(format!(
                "the read of {:#x}..{:#x} ended before the {:#x} bytes the file had when opened",
                offset,
                offset + dst.len() as u64,
                self.len
            )),
            _ => io_error(&self.path, e),
        })
    }
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::File(m) => &m.map,
            Storage::Owned(v) => v,
        }
    }
}

fn io_error(path: &str, e: std::io::Error) -> Error {
    ErrorKind::Io { path: path.to_string(), msg: e.to_string() }.into()
}

/// `pread` until `dst` is full (`UnexpectedEof` when the file ends first).
#[cfg(unix)]
fn read_exact_at(file: &File, dst: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, dst, offset)
}

/// Seek and read until `dst` is full (`UnexpectedEof` when the file ends first).
#[cfg(not(unix))]
fn read_exact_at(mut file: &File, dst: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(dst)
}

/// What a path that is not a regular file is, for the message.
fn file_kind(ft: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    if ft.is_dir() {
        "a directory"
    } else {
        "an unknown file type"
    }
}

/// An open GGUF file: header, metadata and tensor table parsed and validated; tensor data
/// read on demand (checked reads) or borrowed from the map (zero-copy views).
pub struct GgufFile {
    storage: Storage,
    /// GGUF version (2 or 3).
    pub version: u32,
    metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Data alignment.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_start: u64,
}

/// Everything [`GgufFile`] holds but the bytes.
struct Header {
    version: u32,
    metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_start: u64,
}

impl Header {
    fn with_storage(self, storage: Storage) -> GgufFile {
        let Header { version, metadata, index, tensors, tensor_index, alignment, data_start } = self;
        GgufFile { storage, version, metadata, index, tensors, tensor_index, alignment, data_start }
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("kv", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Parses a file's header with checked reads, then maps the file for tensor views.
    ///
    /// Only a regular file (after following symbolic links) is accepted: its type is checked
    /// before it is opened, because opening a FIFO for reading blocks. A file that changes
    /// length while it is parsed gives [`ErrorKind::FileChanged`].
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let io = |e: std::io::Error| io_error(&name, e);
        let not_regular = |ft: std::fs::FileType| -> Error {
            ErrorKind::Io { path: name.clone(), msg: format!("not a regular file ({})", file_kind(ft)) }.into()
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(not_regular(meta.file_type()));
        }
        let file = File::open(path).map_err(io)?;
        // The path may have been replaced between the two calls.
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(not_regular(meta.file_type()));
        }
        let len = meta.len();
        let header = Self::parse_header(&mut Cursor {
            src: Source::File { file: &file, path: &name, buf: Vec::new(), base: 0 },
            pos: 0,
            len,
        })?;
        // SAFETY: the map is read-only and private to this process. A file truncated by
        // another process while mapped makes the views into it fault when touched; the
        // loading paths therefore read with `pread` ([`GgufFile::read_tensor_range`]) and only
        // the zero-copy views ([`GgufFile::tensor_data`], [`GgufFile::bytes`]) touch the map
        // (the usual mmap caveat, accepted for those; llama.cpp and candle map the same way).
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let mapped = MappedFile { map, file, path: name, len };
        if mapped.map.len() as u64 != len {
            return Err(mapped.changed(format!("it is now {} bytes, it was {len} when opened", mapped.map.len())));
        }
        Ok(header.with_storage(Storage::File(mapped)))
    }

    /// Parses a file held in memory (tests, fuzzing).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        let len = bytes.len() as u64;
        let header = Self::parse_header(&mut Cursor { src: Source::Mem(&bytes), pos: 0, len })?;
        Ok(header.with_storage(Storage::Owned(bytes)))
    }

    fn parse_header(c: &mut Cursor<'_>) -> Result<Header> {
        let magic = c.take(4, "magic")?;
        if magic != b"GGUF" {
            return Err(ErrorKind::BadMagic { found: magic.to_vec() }.into());
        }
        let version = c.u32("version")?;
        if version != 2 && version != 3 {
            return Err(ErrorKind::UnsupportedVersion { version }.into());
        }
        let count_off = c.pos;
        let tensor_count = c.u64("tensor_count")?;
        let kv_count = c.u64("kv_count")?;
        // A KV pair takes at least 13 bytes, a tensor info at least 32.
        let left = c.remaining();
        if kv_count > left / 13 {
            return Err(Error::invalid(
                "kv_count",
                count_off + 8,
                format!("{kv_count} pairs cannot fit in the {left} bytes left"),
            ));
        }
        if tensor_count > left / 32 {
            return Err(Error::invalid(
                "tensor_count",
                count_off,
                format!("{tensor_count} tensors cannot fit in the {left} bytes left"),
            ));
        }

        let mut metadata = Vec::with_capacity(prealloc(kv_count));
        let mut index = HashMap::with_capacity(prealloc(kv_count));
        for i in 0..kv_count {
            let key_off = c.pos;
            let key = c.string(&format!("metadata key #{i}"))?;
            let ty_off = c.pos;
            let ty_id = c.u32(&format!("type of `{key}`"))?;
            let ty = ValueType::from_id(ty_id)
                .ok_or_else(|| Error::invalid(format!("metadata `{key}`"), ty_off, format!("unknown value type {ty_id}")))?;
            let value = c.value(ty, &key, 0)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                return Err(Error::invalid("metadata key", key_off, format!("duplicate key `{key}`")));
            }
            metadata.push((key, value));
        }

        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => {
                let a = v.as_int().ok_or_else(|| {
                    Error::metadata("general.alignment", format!("expected an integer, found {}", v.value_type().name()))
                })?;
                if a <= 0 || a % 8 != 0 || a as u64 > MAX_ALIGNMENT {
                    return Err(Error::metadata(
                        "general.alignment",
                        format!("{a} is not a positive multiple of 8 up to {MAX_ALIGNMENT}"),
                    ));
                }
                a as u64
            }
        };

        let mut infos = Vec::with_capacity(prealloc(tensor_count));
        let mut tensor_index = HashMap::with_capacity(prealloc(tensor_count));
        for i in 0..tensor_count {
            let name_off = c.pos;
            let name = c.string(&format!("tensor #{i} name"))?;
            if name.len() > MAX_NAME_LEN {
                return Err(Error::invalid(
                    format!("tensor #{i} name"),
                    name_off,
                    format!("name is {} bytes, the limit is {MAX_NAME_LEN}", name.len()),
                ));
            }
            let nd_off = c.pos;
            let n_dims = c.u32(&format!("tensor `{name}` n_dims"))?;
            if !(1..=4).contains(&n_dims) {
                return Err(Error::invalid(format!("tensor `{name}` n_dims"), nd_off, format!("{n_dims} is not in 1..=4")));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            let mut n_el: u64 = 1;
            for d in 0..n_dims {
                let off = c.pos;
                let v = c.u64(&format!("tensor `{name}` ne[{d}]"))?;
                n_el = n_el.checked_mul(v).filter(|&n| v >= 1 && n <= i64::MAX as u64).ok_or_else(|| {
                    Error::invalid(
                        format!("tensor `{name}` ne[{d}]"),
                        off,
                        format!("dimension {v} is zero or makes the element count overflow"),
                    )
                })?;
                ne.push(v);
            }
            let ty_off = c.pos;
            let ggml_type = c.u32(&format!("tensor `{name}` type"))?;
            let dtype = dtype_from_ggml(ggml_type).map_err(|m| Error::invalid(format!("tensor `{name}` type"), ty_off, m))?;
            let offset = c.u64(&format!("tensor `{name}` offset"))?;
            let nbytes = tensor_nbytes(&name, dtype, &ne)?;
            if tensor_index.insert(name.clone(), infos.len()).is_some() {
                return Err(Error::invalid("tensor name", name_off, format!("duplicate tensor `{name}`")));
            }
            infos.push(TensorInfo { name, ne, ggml_type, dtype, offset, abs_offset: 0, nbytes });
        }

        let data_start = c.pos.div_ceil(alignment) * alignment;
        let len = c.len;
        if data_start > len && !infos.is_empty() {
            return Err(Error::truncated("data section", c.pos, data_start - c.pos, len));
        }
        for t in &mut infos {
            if t.offset % alignment != 0 {
                return Err(Error::tensor(
                    &t.name,
                    format!("offset {:#x} is not a multiple of the alignment {alignment}", t.offset),
                ));
            }
            let start = data_start.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.nbytes));
            match (start, end) {
                (Some(s), Some(e)) if e <= len => t.abs_offset = s,
                _ => {
                    return Err(Error::tensor(
                        &t.name,
                        format!("data range {:#x}+{:#x}..+{:#x} exceeds file size {len:#x}", data_start, t.offset, t.nbytes),
                    ))
                }
            }
        }
        let mut by_offset: Vec<&TensorInfo> = infos.iter().collect();
        by_offset.sort_by_key(|t| t.abs_offset);
        for w in by_offset.windows(2) {
            if w[0].abs_offset + w[0].nbytes > w[1].abs_offset {
                return Err(Error::tensor(
                    &w[1].name,
                    format!(
                        "data at {:#x} overlaps tensor `{}` ({:#x}..{:#x})",
                        w[1].abs_offset,
                        w[0].name,
                        w[0].abs_offset,
                        w[0].abs_offset + w[0].nbytes
                    ),
                ));
            }
        }

        Ok(Header { version, metadata, index, tensors: infos, tensor_index, alignment, data_start })
    }

    /// All metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// A tensor info by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor, borrowed from the map (the range was checked at open). For a
    /// file, touching them after another process truncated it faults (SIGBUS): loading
    /// paths use [`GgufFile::read_tensor_into`] instead.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        &self.storage.bytes()[t.abs_offset as usize..(t.abs_offset + t.nbytes) as usize]
    }

    /// Copies a tensor's bytes into `dst` (its exact size). For a file this reads it
    /// (`pread`) rather than the map, so the mapped pages do not become resident, and a file
    /// that changed since [`GgufFile::open`] gives [`ErrorKind::FileChanged`], not a fault.
    pub fn read_tensor_into(&self, t: &TensorInfo, dst: &mut [u8]) -> Result<()> {
        if dst.len() as u64 != t.nbytes {
            return Err(Error::tensor(
                &t.name,
                format!("destination of {} bytes differs from the tensor's {}", dst.len(), t.nbytes),
            ));
        }
        self.read_tensor_range(t, 0, dst)
    }

    /// Copies `dst.len()` bytes of a tensor starting `offset` bytes into its data, as
    /// [`GgufFile::read_tensor_into`] does (reading the file, not the map).
    pub fn read_tensor_range(&self, t: &TensorInfo, offset: u64, dst: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(dst.len() as u64).filter(|&e| e <= t.nbytes).ok_or_else(|| {
            Error::tensor(&t.name, format!("range {offset:#x}+{:#x} is outside its {:#x} bytes", dst.len(), t.nbytes))
        })?;
        match &self.storage {
            Storage::File(m) => m.read_at(dst, t.abs_offset + offset),
            Storage::Owned(v) => {
                dst.copy_from_slice(&v[(t.abs_offset + offset) as usize..(t.abs_offset + end) as usize]);
                Ok(())
            }
        }
    }

    /// The whole file's bytes (the map, for a file: see [`GgufFile::tensor_data`]).
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Decodes a tensor to f32 (reference path; reads [`GgufFile::tensor_data`]).
    pub fn tensor_f32(&self, name: &str) -> Option<Vec<f32>> {
        let t = self.tensor(name)?;
        Some(crate::types::decode_to_f32(t.dtype, self.tensor_data(t), t.n_elements() as usize))
    }
}

/// Byte size of a tensor of `dtype` with ggml dimensions `ne` (innermost first), with the
/// rules [`GgufFile::open`] applies to every tensor: 1 to 4 dimensions, each at least 1, an
/// element count that fits in an i64, whole blocks per row, and for I2_S rows of a multiple
/// of 128 and `ne1 % 4 == 0` (../shared/docs/format.md §1, §2). `name` is for the message.
pub fn tensor_nbytes(name: &str, dtype: DType, ne: &[u64]) -> Result<u64> {
    if !(1..=4).contains(&ne.len()) {
        return Err(Error::tensor(name, format!("{} dimensions is not in 1..=4", ne.len())));
    }
    if ne.iter().try_fold(1u64, |n, &d| n.checked_mul(d).filter(|&n| d >= 1 && n <= i64::MAX as u64)).is_none() {
        return Err(Error::tensor(name, format!("ne {ne:?} has a zero dimension or an element count that overflows")));
    }
    let row = ne[0];
    let rows: u64 = ne[1..].iter().product();
    if dtype == DType::I2S {
        if !row.is_multiple_of(128) {
            return Err(Error::tensor(name, format!("I2_S row length ne0 = {row} is not a multiple of 128")));
        }
        // ../shared/docs/format.md §1.6: `ne1 % 4 == 0` (which implies `rows % 4 == 0` for 3-D and 4-D).
        if ne.len() < 2 || !ne[1].is_multiple_of(4) {
            return Err(Error::tensor(name, format!("I2_S needs a matrix whose ne1 is a multiple of 4, got ne {ne:?}")));
        }
    }
    if let Some((blk, _)) = dtype.block() {
        if !row.is_multiple_of(blk as u64) {
            return Err(Error::tensor(name, format!("ne0 = {row} is not a multiple of the {dtype} block size {blk}")));
        }
    }
    let row = usize::try_from(row).ok();
    let rows = usize::try_from(rows).ok();
    row.zip(rows)
        .and_then(|(r, n)| dtype.nbytes(r, n))
        .map(|b| b as u64)
        .ok_or_else(|| Error::tensor(name, format!("byte size of {dtype} tensor with ne {ne:?} overflows")))
}

/// Where the header bytes come from.
enum Source<'a> {
    /// The whole file in memory.
    Mem(&'a [u8]),
    /// A file read with `pread` into a window `buf` that starts at file offset `base`.
    File { file: &'a File, path: &'a str, buf: Vec<u8>, base: u64 },
}

/// Reads the header front to back; every read is checked against `len`, the file's length.
struct Cursor<'a> {
    src: Source<'a>,
    pos: u64,
    len: u64,
}

impl Cursor<'_> {
    fn remaining(&self) -> u64 {
        self.len - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        if n as u64 > self.remaining() {
            return Err(Error::truncated(what, self.pos, n as u64, self.len));
        }
        let (pos, len) = (self.pos, self.len);
        self.pos += n as u64;
        match &mut self.src {
            Source::Mem(b) => Ok(&b[pos as usize..pos as usize + n]),
            Source::File { file, path, buf, base } => {
                if pos + n as u64 > *base + buf.len() as u64 {
                    // Drop what was consumed, then hold at least a chunk from `pos` on.
                    buf.drain(..(pos - *base) as usize);
                    *base = pos;
                    let have = buf.len();
                    buf.resize((n.max(HEADER_CHUNK) as u64).min(len - pos) as usize, 0);
                    let at = pos + have as u64;
                    read_exact_at(file, &mut buf[have..], at).map_err(|e| match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => Error::from(ErrorKind::FileChanged {
                            path: path.to_string(),
                            msg: format!("the header read at {at:#x} ended before the {len:#x} bytes the file had when opened"),
                        }),
                        _ => io_error(path, e),
                    })?;
                }
                let o = (pos - *base) as usize;
                Ok(&buf[o..o + n])
            }
        }
    }

    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let off = self.pos;
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(Error::truncated(format!("{what} (string of {len} bytes)"), off + 8, len, self.len));
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| Error::invalid(what, off + 8 + e.utf8_error().valid_up_to() as u64, "invalid UTF-8"))
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value> {
        let what = || format!("value of `{key}`");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.arr::<1>(&what())?[0]),
            ValueType::I8 => Value::I8(self.arr::<1>(&what())?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.arr(&what())?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.arr(&what())?)),
            ValueType::U32 => Value::U32(self.u32(&what())?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.arr(&what())?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.arr(&what())?)),
            ValueType::Bool => {
                let off = self.pos;
                match self.arr::<1>(&what())?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => return Err(Error::invalid(what(), off, format!("bool byte {b} is not 0 or 1"))),
                }
            }
            ValueType::String => Value::String(self.string(&what())?),
            ValueType::U64 => Value::U64(self.u64(&what())?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.arr(&what())?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.arr(&what())?)),
            ValueType::Array => Value::Array(self.array(key, depth)?),
        })
    }

    fn array(&mut self, key: &str, depth: usize) -> Result<Array> {
        let off = self.pos;
        if depth >= MAX_ARRAY_DEPTH {
            return Err(Error::invalid(format!("array `{key}`"), off, format!("nested deeper than {MAX_ARRAY_DEPTH}")));
        }
        let ty_id = self.u32(&format!("array `{key}` element type"))?;
        let ty = ValueType::from_id(ty_id)
            .ok_or_else(|| Error::invalid(format!("array `{key}`"), off, format!("unknown element type {ty_id}")))?;
        let count = self.u64(&format!("array `{key}` count"))?;
        let left = self.remaining();
        if count > left / ty.min_size() as u64 {
            return Err(Error::invalid(
                format!("array `{key}`"),
                off + 4,
                format!("{count} {} elements cannot fit in the {left} bytes left", ty.name()),
            ));
        }
        let n = count as usize;
        macro_rules! prim {
            ($variant:ident, $t:ty) => {{
                let sz = std::mem::size_of::<$t>();
                let bytes = self.take(n * sz, &format!("array `{key}`"))?;
                Array::$variant(bytes.chunks_exact(sz).map(|c| <$t>::from_le_bytes(c.try_into().unwrap())).collect())
            }};
        }
        Ok(match ty {
            ValueType::U8 => Array::U8(self.take(n, &format!("array `{key}`"))?.to_vec()),
            ValueType::I8 => prim!(I8, i8),
            ValueType::U16 => prim!(U16, u16),
            ValueType::I16 => prim!(I16, i16),
            ValueType::U32 => prim!(U32, u32),
            ValueType::I32 => prim!(I32, i32),
            ValueType::F32 => prim!(F32, f32),
            ValueType::U64 => prim!(U64, u64),
            ValueType::I64 => prim!(I64, i64),
            ValueType::F64 => prim!(F64, f64),
            ValueType::Bool => {
                let start = self.pos;
                let bytes = self.take(n, &format!("array `{key}`"))?;
                let mut v = Vec::with_capacity(n);
                for (i, &b) in bytes.iter().enumerate() {
                    match b {
                        0 | 1 => v.push(b == 1),
                        _ => {
                            return Err(Error::invalid(format!("array `{key}`[{i}]"), start + i as u64, format!("bool byte {b}")))
                        }
                    }
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(prealloc(count));
                for i in 0..n {
                    v.push(self.string(&format!("array `{key}`[{i}]"))?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(prealloc(count));
                for _ in 0..n {
                    v.push(self.array(key, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that shrinks between the `fstat` in `open` and the header reads: the reads come
    /// up short, which is a changed file, not a truncated one.
    #[test]
    fn header_read_short_of_the_length_at_open_is_file_changed() {
        let path = std::env::temp_dir().join(format!("gguf-shrinks-{}.gguf", std::process::id()));
        let mut bytes = Vec::new();
        let md = [("general.name".to_string(), Value::String("x".repeat(3000)))];
        crate::writer::write_gguf(&mut bytes, &md, &[], 32).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let file = File::open(&path).unwrap();
        let src = Source::File { file: &file, path: "shrunk.gguf", buf: Vec::new(), base: 0 };
        let err = GgufFile::parse_header(&mut Cursor { src, pos: 0, len: bytes.len() as u64 }).err().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(err.kind(), ErrorKind::FileChanged { .. }), "{err}");
        assert!(
            err.to_string().ends_with(
                "file changed while loading (the header read at 0x0 ended before the 0xc00 bytes the file had when opened)"
            ),
            "{err}"
        );
    }
}
