//! Minimal NumPy `.npy` reading and writing (little-endian f32 / i32, C order), for the
//! reference dumps in `../shared/reference` and for `exec --logits-out`.

use std::io::{self, Write};
use std::path::Path;

/// An array read from a `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray<T> {
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Elements in C order.
    pub data: Vec<T>,
}

fn bad(path: &Path, msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("npy: {}: {}", path.display(), msg.into()))
}

fn read_raw(path: &Path, descr: &[&str]) -> io::Result<(Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path)?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad(path, "not an npy file"));
    }
    let (hlen, hstart) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(bad(path, format!("unsupported npy version {v}"))),
    };
    let header = bytes.get(hstart..hstart + hlen).ok_or_else(|| bad(path, "truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad(path, "header is not UTF-8"))?;
    if !descr.iter().any(|d| header.contains(&format!("'descr': '{d}'"))) {
        return Err(bad(path, format!("expected dtype {descr:?}, header {header}")));
    }
    if header.contains("'fortran_order': True") {
        return Err(bad(path, "fortran order is not supported"));
    }
    let s = header.find("'shape': (").ok_or_else(|| bad(path, "no shape"))? + 10;
    let e = s + header[s..].find(')').ok_or_else(|| bad(path, "bad shape"))?;
    let shape: Vec<usize> = header[s..e]
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().map_err(|_| bad(path, format!("bad dimension {x}"))))
        .collect::<io::Result<_>>()?;
    let n: usize = shape.iter().product();
    let data = bytes[hstart + hlen..].to_vec();
    if data.len() != n * 4 {
        return Err(bad(path, format!("{} data bytes for shape {shape:?}", data.len())));
    }
    Ok((shape, data))
}

/// Reads a little-endian f32 array.
pub fn read_f32(path: impl AsRef<Path>) -> io::Result<NpyArray<f32>> {
    let (shape, raw) = read_raw(path.as_ref(), &["<f4"])?;
    Ok(NpyArray { shape, data: raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect() })
}

/// Reads a little-endian i32 array.
pub fn read_i32(path: impl AsRef<Path>) -> io::Result<NpyArray<i32>> {
    let (shape, raw) = read_raw(path.as_ref(), &["<i4"])?;
    Ok(NpyArray { shape, data: raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect() })
}

/// Writes a little-endian f32 array in npy format 1.0.
pub fn write_f32<W: Write>(w: &mut W, shape: &[usize], data: &[f32]) -> io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if shape.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.div_ceil(64) * 64 - total));
    header.push('\n');
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    let mut buf = Vec::with_capacity(data.len() * 4);
    for x in data {
        buf.extend_from_slice(&x.to_le_bytes());
    }
    w.write_all(&buf)
}
