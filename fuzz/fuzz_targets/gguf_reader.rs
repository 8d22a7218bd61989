//! Feeds arbitrary bytes to the GGUF reader. On success, touches every tensor's data and
//! decodes the small tensors, which must agree with the ranges the reader validated, and
//! runs `check_tensors` over the data.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Largest tensor (in elements) that gets decoded on each input.
const DECODE_MAX: u64 = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = gguf::GgufFile::from_bytes(data.to_vec()) else { return };
    let len = f.bytes().len() as u64;
    assert!(f.data_start % f.alignment == 0);
    let mut acc = 0u8;
    for (k, v) in f.metadata() {
        assert!(f.get(k).is_some());
        acc ^= v.summary().len() as u8;
    }
    for t in f.tensors() {
        assert!(std::ptr::eq(f.tensor(&t.name).unwrap(), t));
        assert!(t.abs_offset + t.nbytes <= len);
        assert_eq!(t.abs_offset, f.data_start + t.offset);
        let d = f.tensor_data(t);
        assert_eq!(d.len() as u64, t.nbytes);
        acc ^= d.iter().fold(0u8, |a, &b| a ^ b);
        let n = t.n_elements();
        assert_eq!(t.shape().len(), t.ne.len());
        if n <= DECODE_MAX {
            let v = gguf::types::decode_to_f32(t.dtype, d, n as usize);
            assert_eq!(v.len() as u64, n);
            acc ^= v.iter().fold(0u32, |a, x| a ^ x.to_bits()) as u8;
        }
    }
    // Reads from memory cannot fail; whatever the bytes, the scan must not panic.
    let r = gguf::check_tensors(&f).expect("in-memory reads");
    assert_eq!(r.tensors, f.tensors().len());
    acc ^= r.bad.len() as u8;
    std::hint::black_box(acc);
});
