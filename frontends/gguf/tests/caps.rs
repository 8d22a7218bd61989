//! The public limits `gguf::reader::{MAX_DIM, MAX_LAYERS}` (which `synth` checks before
//! writing) are the ones lowering enforces: a value at the limit is accepted, one past it
//! refused with the key named.

use gguf::reader::{MAX_DIM, MAX_LAYERS};
use gguf::value::Value;
use gguf::writer::{write_gguf, TensorSpec};
use gguf::{ErrorKind, GgufFile};

const B1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models/b1-spm-i2_s.gguf");

/// The shared `bitnet` model with metadata `key` set to `v`, lowered.
fn lower_with(key: &str, v: u64) -> Result<(), gguf::Error> {
    let f = GgufFile::open(B1).unwrap();
    let md: Vec<(String, Value)> =
        f.metadata().iter().map(|(k, old)| (k.clone(), if k == key { Value::U64(v) } else { old.clone() })).collect();
    assert!(md.iter().any(|(k, _)| k == key), "{key}");
    let tensors: Vec<(TensorSpec, &[u8])> = f
        .tensors()
        .iter()
        .map(|t| {
            (TensorSpec { name: t.name.clone(), ne: t.ne.clone(), ggml_type: t.ggml_type, nbytes: t.nbytes }, f.tensor_data(t))
        })
        .collect();
    let mut bytes = Vec::new();
    write_gguf(&mut bytes, &md, &tensors, f.alignment).unwrap();
    gguf::lower(&GgufFile::from_bytes(bytes).unwrap()).map(|_| ())
}

#[test]
fn reader_limits_are_the_ones_lowering_enforces() {
    assert!(lower_with("bitnet.context_length", MAX_DIM).is_ok());
    let e = lower_with("bitnet.context_length", MAX_DIM + 1).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Metadata { key, .. } if key == "bitnet.context_length"), "{e}");
    assert!(e.to_string().contains(&format!("1..={MAX_DIM}")), "{e}");
    // Only the shared model's 2 layers have tensors: MAX_LAYERS itself fails later, on a
    // missing tensor, not on the limit.
    let e = lower_with("bitnet.block_count", MAX_LAYERS).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Tensor { .. }), "{e}");
    let e = lower_with("bitnet.block_count", MAX_LAYERS + 1).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Metadata { key, .. } if key == "bitnet.block_count"), "{e}");
}
