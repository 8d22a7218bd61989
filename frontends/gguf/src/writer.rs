//! A streaming GGUF v3 writer: header and tables first, then each tensor's bytes in order.
//! Used by `synth`, by tests that build modified or corrupted copies of a model, and by the
//! fuzz corpus generator.

use std::io::{self, Write};

use crate::value::{Array, Value};

/// A tensor to be written: name, ggml `ne` (innermost first), GGUF type id and byte size.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    /// Name.
    pub name: String,
    /// ggml `ne`.
    pub ne: Vec<u64>,
    /// GGUF type id.
    pub ggml_type: u32,
    /// Byte size of the data.
    pub nbytes: u64,
}

/// Writes the header, metadata and tensor infos; returns the offsets (relative to the data
/// section) assigned to each tensor. The caller then calls [`write_tensor`] for each tensor
/// in the same order.
pub fn write_header<W: Write>(
    w: &mut W,
    metadata: &[(String, Value)],
    tensors: &[TensorSpec],
    alignment: u64,
) -> io::Result<Vec<u64>> {
    let mut head = Vec::new();
    head.extend_from_slice(b"GGUF");
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut head, k);
        head.extend_from_slice(&v.value_type().id().to_le_bytes());
        put_value(&mut head, v);
    }
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut off = 0u64;
    for t in tensors {
        put_str(&mut head, &t.name);
        head.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        for &d in &t.ne {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&t.ggml_type.to_le_bytes());
        head.extend_from_slice(&off.to_le_bytes());
        offsets.push(off);
        off = (off + t.nbytes).div_ceil(alignment) * alignment;
    }
    let pad = (head.len() as u64).div_ceil(alignment) * alignment - head.len() as u64;
    head.resize(head.len() + pad as usize, 0);
    w.write_all(&head)?;
    Ok(offsets)
}

/// Writes one tensor's bytes followed by zero padding to `alignment`.
pub fn write_tensor<W: Write>(w: &mut W, data: &[u8], alignment: u64) -> io::Result<()> {
    w.write_all(data)?;
    let pad = (data.len() as u64).div_ceil(alignment) * alignment - data.len() as u64;
    w.write_all(&vec![0u8; pad as usize])
}

/// Writes the zero padding that follows a tensor of `nbytes` bytes written in pieces.
pub fn write_padding<W: Write>(w: &mut W, nbytes: u64, alignment: u64) -> io::Result<()> {
    let pad = nbytes.div_ceil(alignment) * alignment - nbytes;
    w.write_all(&vec![0u8; pad as usize])
}

/// Writes a whole file held in memory.
pub fn write_gguf<W: Write>(
    w: &mut W,
    metadata: &[(String, Value)],
    tensors: &[(TensorSpec, &[u8])],
    alignment: u64,
) -> io::Result<()> {
    let specs: Vec<TensorSpec> = tensors.iter().map(|(s, _)| s.clone()).collect();
    write_header(w, metadata, &specs, alignment)?;
    for (_, data) in tensors {
        write_tensor(w, data, alignment)?;
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&a.elem_type().id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each!(v),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F64(v) => each!(v),
        Array::Array(v) => v.iter().for_each(|x| put_array(out, x)),
    }
}
