//! Corrupted GGUF files (../shared/docs/format.md §1, "What a robust reader must check"): each one must
//! give an `Err` of the right kind whose message says where (an offset) or what (the key or
//! tensor name), never a panic, and parsing must never allocate far beyond the file's size.
//!
//! Bases: a small file built with `gguf::writer` (a few metadata kinds including a string
//! array, three tensors including an I2_S one), the real `tiny-i2_s.gguf`, and (for seeded
//! random mutations) the real `b1-spm-i2_s.gguf`. A test-side walker
//! (independent of the reader) lists every header field with its offset, so each corruption
//! targets a named field. The test binary tracks allocations per thread to bound what a
//! lying count can make the reader reserve.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gguf::value::{Array, Value};
use gguf::writer::{write_gguf, TensorSpec};
use gguf::{Error, ErrorKind, GgufFile};
use graph::DType;

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models/tiny-i2_s.gguf");

// ---------------------------------------------------------------------------------------------
// Allocation tracking: the largest single request and the sum of all requests, per thread.

struct Tracking;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(n: usize) {
    let _ = PEAK.try_with(|p| p.set(p.get().max(n)));
    let _ = TOTAL.try_with(|t| t.set(t.get().saturating_add(n)));
}

// SAFETY: forwards to the system allocator unchanged; only records sizes in thread-locals
// that are const-initialised (no allocation on first access).
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

struct Outcome {
    result: Result<GgufFile, Error>,
    /// Largest single allocation during the parse.
    peak: usize,
    /// Sum of all allocations during the parse.
    total: usize,
    elapsed: Duration,
}

/// Parses `bytes`, turning a panic into a test failure that names the case.
fn parse(bytes: Vec<u8>, case: &str) -> Outcome {
    PEAK.with(|p| p.set(0));
    TOTAL.with(|t| t.set(0));
    let t0 = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(move || GgufFile::from_bytes(bytes)));
    let elapsed = t0.elapsed();
    let (peak, total) = (PEAK.with(Cell::get), TOTAL.with(Cell::get));
    match result {
        Ok(result) => Outcome { result, peak, total, elapsed },
        Err(_) => panic!("{case}: the reader panicked"),
    }
}

/// What a parse of `len` bytes may allocate at most. The reader's own tables are a small
/// multiple of the file for valid files; a lie in a count must not make it more.
fn alloc_limit(len: usize) -> usize {
    4 * len + (4 << 20)
}

/// Parses and expects an error, with bounded allocation and time.
fn expect_err(bytes: Vec<u8>, case: &str) -> Error {
    let len = bytes.len();
    let o = parse(bytes, case);
    assert!(o.peak <= alloc_limit(len), "{case}: largest allocation {} bytes for a {len}-byte file", o.peak);
    assert!(o.total <= 2 * alloc_limit(len), "{case}: allocated {} bytes in all for a {len}-byte file", o.total);
    assert!(o.elapsed < Duration::from_secs(20), "{case}: took {:?}", o.elapsed);
    match o.result {
        Ok(f) => panic!("{case}: accepted ({f:?})"),
        Err(e) => e,
    }
}

fn has_offset(e: &Error) -> bool {
    e.to_string().contains("offset 0x")
}

// ---------------------------------------------------------------------------------------------
// A reader-independent walker over the header.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum K {
    Magic,
    Version,
    TensorCount,
    KvCount,
    KeyLen,
    Key,
    ValueType,
    Scalar,
    BoolByte,
    StrLen,
    Str,
    ArrType,
    ArrCount,
    NameLen,
    Name,
    NDims,
    Ne,
    TType,
    TOffset,
}

#[derive(Clone, Debug)]
struct Field {
    k: K,
    off: usize,
    len: usize,
    /// The metadata key or tensor name the field belongs to ("" for the header).
    owner: String,
    /// Index of the KV pair or tensor info.
    index: usize,
    /// Element index inside an array.
    elem: Option<u64>,
    /// The value type (for `Scalar`, `StrLen`, `ArrCount`: the element type of the array).
    ty: u32,
}

struct Map {
    fields: Vec<Field>,
    /// End of the tensor-info block.
    infos_end: usize,
}

impl Map {
    fn of(&self, k: K) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(move |f| f.k == k)
    }
    /// The first field of kind `k` owned by `owner`.
    fn find(&self, k: K, owner: &str) -> &Field {
        self.fields.iter().find(|f| f.k == k && f.owner == owner).unwrap_or_else(|| panic!("no {k:?} of {owner}"))
    }
    /// The `d`-th `ne` field of a tensor.
    fn ne(&self, owner: &str, d: usize) -> &Field {
        self.fields.iter().filter(|f| f.k == K::Ne && f.owner == owner).nth(d).unwrap()
    }
}

struct Walker<'a> {
    b: &'a [u8],
    pos: usize,
    fields: Vec<Field>,
    /// Array elements recorded: the first `keep` and the last two.
    keep: u64,
}

impl Walker<'_> {
    fn read(&self, off: usize, len: usize) -> u64 {
        let mut v = [0u8; 8];
        v[..len.min(8)].copy_from_slice(&self.b[off..off + len.min(8)]);
        u64::from_le_bytes(v)
    }

    #[allow(clippy::too_many_arguments)]
    fn field(&mut self, k: K, len: usize, owner: &str, index: usize, elem: Option<u64>, ty: u32, rec: bool) -> u64 {
        let v = self.read(self.pos, len);
        if rec {
            self.fields.push(Field { k, off: self.pos, len, owner: owner.into(), index, elem, ty });
        }
        self.pos += len;
        v
    }

    fn peek_string(&self) -> String {
        let n = self.read(self.pos, 8) as usize;
        String::from_utf8_lossy(&self.b[self.pos + 8..self.pos + 8 + n]).into_owned()
    }

    fn value(&mut self, ty: u32, owner: &str, index: usize, elem: Option<u64>, rec: bool) {
        match ty {
            0 | 1 => drop(self.field(K::Scalar, 1, owner, index, elem, ty, rec)),
            2 | 3 => drop(self.field(K::Scalar, 2, owner, index, elem, ty, rec)),
            4..=6 => drop(self.field(K::Scalar, 4, owner, index, elem, ty, rec)),
            7 => drop(self.field(K::BoolByte, 1, owner, index, elem, ty, rec)),
            8 => {
                let n = self.field(K::StrLen, 8, owner, index, elem, ty, rec) as usize;
                self.field(K::Str, n, owner, index, elem, ty, rec);
            }
            9 => {
                let ety = self.field(K::ArrType, 4, owner, index, elem, 9, rec) as u32;
                let n = self.field(K::ArrCount, 8, owner, index, elem, ety, rec);
                for i in 0..n {
                    let r = rec && (i < self.keep || i + 2 >= n);
                    self.value(ety, owner, index, Some(i), r);
                }
            }
            10..=12 => drop(self.field(K::Scalar, 8, owner, index, elem, ty, rec)),
            t => panic!("walker: value type {t}"),
        }
    }
}

fn walk(b: &[u8], keep: u64) -> Map {
    let mut w = Walker { b, pos: 0, fields: Vec::new(), keep };
    w.field(K::Magic, 4, "", 0, None, 0, true);
    w.field(K::Version, 4, "", 0, None, 0, true);
    let tc = w.field(K::TensorCount, 8, "", 0, None, 0, true);
    let kc = w.field(K::KvCount, 8, "", 0, None, 0, true);
    for i in 0..kc as usize {
        let key = w.peek_string();
        let n = w.field(K::KeyLen, 8, &key, i, None, 8, true) as usize;
        w.field(K::Key, n, &key, i, None, 8, true);
        let ty = w.field(K::ValueType, 4, &key, i, None, 0, true) as u32;
        w.value(ty, &key, i, None, true);
    }
    for i in 0..tc as usize {
        let name = w.peek_string();
        let n = w.field(K::NameLen, 8, &name, i, None, 8, true) as usize;
        w.field(K::Name, n, &name, i, None, 8, true);
        let nd = w.field(K::NDims, 4, &name, i, None, 4, true);
        for d in 0..nd {
            w.field(K::Ne, 8, &name, i, Some(d), 10, true);
        }
        w.field(K::TType, 4, &name, i, None, 4, true);
        w.field(K::TOffset, 8, &name, i, None, 10, true);
    }
    Map { fields: w.fields, infos_end: w.pos }
}

// ---------------------------------------------------------------------------------------------
// The two bases.

fn spec(name: &str, ne: &[u64], dtype: DType) -> TensorSpec {
    let rows = ne[1..].iter().product::<u64>() as usize;
    TensorSpec {
        name: name.into(),
        ne: ne.to_vec(),
        ggml_type: gguf::types::ggml_from_dtype(dtype).unwrap(),
        nbytes: dtype.nbytes(ne[0] as usize, rows).unwrap() as u64,
    }
}

fn build(metadata: &[(String, Value)], tensors: &[TensorSpec], alignment: u64) -> Vec<u8> {
    let data: Vec<Vec<u8>> = tensors.iter().map(|s| (0..s.nbytes).map(|i| (i as u8).wrapping_mul(37) ^ 0x5a).collect()).collect();
    let refs: Vec<(TensorSpec, &[u8])> = tensors.iter().cloned().zip(data.iter().map(Vec::as_slice)).collect();
    let mut out = Vec::new();
    write_gguf(&mut out, metadata, &refs, alignment).unwrap();
    out
}

fn kv(k: &str, v: Value) -> (String, Value) {
    (k.into(), v)
}

fn small_metadata() -> Vec<(String, Value)> {
    vec![
        kv("general.architecture", Value::String("bitnet-b1.58".into())),
        kv("bitnet-b1.58.block_count", Value::U32(1)),
        kv("bitnet-b1.58.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        kv("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        kv("tokenizer.ggml.tokens", Value::Array(Array::String(vec!["a".into(), "bc".into(), "Ġd".into(), "".into()]))),
        kv("tokenizer.ggml.scores", Value::Array(Array::F32(vec![0.0, -1.0, 2.5, 0.0]))),
        kv("tokenizer.ggml.flags", Value::Array(Array::Bool(vec![false, true, false]))),
        kv("general.big", Value::U64(1 << 40)),
        kv("general.nested", Value::Array(Array::Array(vec![Array::I32(vec![1, 2]), Array::String(vec!["x".into()])]))),
    ]
}

fn small_tensors() -> Vec<TensorSpec> {
    vec![
        spec("norm.weight", &[8], DType::F32),
        spec("blk.0.attn_q.weight", &[128, 4], DType::I2S),
        spec("token_embd.weight", &[8, 4], DType::F16),
    ]
}

fn small() -> &'static (Vec<u8>, Map) {
    static S: OnceLock<(Vec<u8>, Map)> = OnceLock::new();
    S.get_or_init(|| {
        let b = build(&small_metadata(), &small_tensors(), 32);
        let l = walk(&b, u64::MAX);
        (b, l)
    })
}

/// The real tiny model and its layout (array elements: first 3 and last 2 recorded).
fn tiny() -> &'static (Vec<u8>, Map) {
    static T: OnceLock<(Vec<u8>, Map)> = OnceLock::new();
    T.get_or_init(|| {
        let b = std::fs::read(TINY).unwrap();
        let l = walk(&b, 3);
        (b, l)
    })
}

/// The valid parse of a base (for tensor ranges and data_start).
fn valid(b: &[u8]) -> GgufFile {
    GgufFile::from_bytes(b.to_vec()).unwrap()
}

fn patched(base: &[u8], off: usize, bytes: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    v[off..off + bytes.len()].copy_from_slice(bytes);
    v
}

/// Writes `v` into field `f` (little-endian, field width).
fn set(base: &[u8], f: &Field, v: u64) -> Vec<u8> {
    patched(base, f.off, &v.to_le_bytes()[..f.len])
}

// ---------------------------------------------------------------------------------------------
// Sanity of the bases.

#[test]
fn bases_are_valid_and_walked() {
    for (b, l) in [small(), tiny()] {
        let f = valid(b);
        assert!(l.infos_end as u64 <= f.data_start);
        assert_eq!(l.of(K::KeyLen).count(), f.metadata().len());
        assert_eq!(l.of(K::NameLen).count(), f.tensors().len());
        assert!(f.data_start - (l.infos_end as u64) < f.alignment);
        for t in f.tensors() {
            assert_eq!(l.find(K::TOffset, &t.name).off, l.find(K::TType, &t.name).off + 4);
        }
    }
    let f = valid(&small().0);
    assert_eq!(f.tensor("blk.0.attn_q.weight").unwrap().nbytes, 128 * 4 / 4 + 32);
}

// ---------------------------------------------------------------------------------------------
// Truncation.

/// What truncating inside (or at the start of) field `f` must report.
fn check_truncated_in_field(e: &Error, f: &Field, t: usize, case: &str) {
    assert!(has_offset(e), "{case}: no offset in `{e}`");
    match e.kind() {
        // The counts are capped by the bytes left, so a short file can fail there first.
        ErrorKind::Invalid { what, .. } if what == "kv_count" || what == "tensor_count" => {}
        ErrorKind::Invalid { msg, .. } if msg.contains("cannot fit") => {
            assert!(e.to_string().contains(&format!("`{}`", f.owner)), "{case}: `{e}`")
        }
        ErrorKind::Truncated { what, offset, len, .. } => {
            assert!(*offset as usize >= f.off && (*offset as usize) <= f.off + f.len, "{case}: offset in `{e}`");
            assert_eq!(*len as usize, t, "{case}: file length in `{e}`");
            match f.k {
                K::Magic => assert_eq!(what, "magic", "{case}"),
                K::Version => assert_eq!(what, "version", "{case}"),
                K::TensorCount => assert_eq!(what, "tensor_count", "{case}"),
                K::KvCount => assert_eq!(what, "kv_count", "{case}"),
                K::KeyLen | K::Key => assert!(what.contains(&format!("metadata key #{}", f.index)), "{case}: `{e}`"),
                K::NameLen | K::Name => assert!(what.contains(&format!("tensor #{} name", f.index)), "{case}: `{e}`"),
                _ => assert!(what.contains(&format!("`{}`", f.owner)), "{case}: `{e}`"),
            }
        }
        other => panic!("{case}: unexpected {other:?}"),
    }
}

/// Truncation at `t` of a base whose layout is `l`: before the end of the last tensor's data
/// it must fail, with the field (or tensor) named; from there on the file is valid.
fn check_truncation(b: &[u8], l: &Map, f: &GgufFile, t: usize) {
    let case = format!("truncated at {t:#x}");
    let data_end = f.tensors().iter().map(|t| t.abs_offset + t.nbytes).max().unwrap_or(0) as usize;
    if t >= data_end && t >= l.infos_end {
        let o = parse(b[..t].to_vec(), &case);
        assert!(o.result.is_ok(), "{case}: {:?}", o.result.err());
        return;
    }
    let e = expect_err(b[..t].to_vec(), &case);
    if t < l.infos_end {
        // The field being read when the bytes ran out (zero-length strings are read fine).
        let field = l.fields.iter().find(|fl| fl.off <= t && t < fl.off + fl.len).unwrap();
        check_truncated_in_field(&e, field, t, &case);
    } else if (t as u64) < f.data_start {
        assert!(matches!(e.kind(), ErrorKind::Truncated { what, .. } if what == "data section"), "{case}: `{e}`");
        assert!(has_offset(&e), "{case}: `{e}`");
    } else {
        match e.kind() {
            ErrorKind::Tensor { name, msg } => {
                let ti = f.tensor(name).unwrap();
                assert!(ti.abs_offset + ti.nbytes > t as u64, "{case}: blamed `{name}`, which fits");
                assert!(msg.contains("exceeds file size"), "{case}: `{e}`");
                assert!(e.to_string().contains(&format!("`{name}`")), "{case}: `{e}`");
            }
            other => panic!("{case}: unexpected {other:?}"),
        }
    }
}

#[test]
fn small_truncated_at_every_byte() {
    let (b, l) = small();
    let f = valid(b);
    for t in 0..b.len() {
        check_truncation(b, l, &f, t);
    }
}

#[test]
fn small_truncated_at_every_field_boundary() {
    let (b, l) = small();
    let f = valid(b);
    for fl in &l.fields {
        for t in [fl.off, fl.off + fl.len / 2, fl.off + fl.len] {
            if t < b.len() {
                check_truncation(b, l, &f, t);
            }
        }
    }
}

/// The tiny model cut inside its header: at every KV pair and tensor info, at every field of
/// the non-array pairs, at the first and last elements of the big arrays, and at every field
/// of the first and last tensor infos; then inside the data section.
#[test]
fn tiny_truncated_at_structural_boundaries() {
    let (b, l) = tiny();
    let f = valid(b);
    let n_tensors = f.tensors().len();
    // Every cut past the big arrays re-parses ~8 MB of metadata: fewer of those.
    let late = late_offset(l);
    let mut cuts: Vec<usize> = Vec::new();
    for fl in &l.fields {
        let in_tensor_info = matches!(fl.k, K::NameLen | K::Name | K::NDims | K::Ne | K::TType | K::TOffset);
        let chosen = if in_tensor_info {
            fl.index == 0
                || (fl.index + 1 == n_tensors && matches!(fl.k, K::NameLen | K::TOffset))
                || (fl.k == K::NameLen && fl.index % 8 == 0)
        } else if let Some(i) = fl.elem {
            // The first and the last element of each array.
            i == 0 || l.fields.iter().all(|g| g.owner != fl.owner || !matches!(g.elem, Some(j) if j > i))
        } else {
            fl.off < late || fl.k == K::KeyLen
        };
        if chosen {
            cuts.push(fl.off);
            if fl.len > 1 && fl.off < late && fl.elem.is_none() {
                cuts.push(fl.off + fl.len - 1);
            }
        }
    }
    cuts.push(l.infos_end);
    cuts.push(f.data_start as usize);
    let first = &f.tensors()[0];
    cuts.push((first.abs_offset + first.nbytes) as usize - 1);
    cuts.push(b.len() - 1);
    cuts.sort();
    cuts.dedup();
    for t in cuts {
        check_truncation(b, l, &f, t);
    }
}

// ---------------------------------------------------------------------------------------------
// Counts and lengths set huge.

/// Values tried for a count or length field: absurd, large, and just above what the bytes
/// after the field could hold.
fn huge_values(b: &[u8], fl: &Field) -> Vec<u64> {
    let left = (b.len() - fl.off - fl.len) as u64;
    let min_size = match fl.k {
        K::KvCount => 13,
        K::TensorCount => 32,
        K::ArrCount => match fl.ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            9 => 12,
            _ => 8,
        },
        _ => 1,
    };
    let mut v = vec![u64::MAX, 1 << 40, u64::MAX / 2 + 1, left / min_size + 1];
    if fl.k == K::ArrCount || fl.k == K::KvCount || fl.k == K::TensorCount {
        v.push(u32::MAX as u64 + 1);
    }
    v
}

fn check_huge(b: &[u8], fl: &Field, v: u64, case: &str) {
    let e = expect_err(set(b, fl, v), case);
    let s = e.to_string();
    match fl.k {
        K::KvCount | K::TensorCount => {
            let want = if fl.k == K::KvCount { "kv_count" } else { "tensor_count" };
            assert!(
                matches!(e.kind(), ErrorKind::Invalid { what, offset, .. } if what == want && *offset as usize == fl.off),
                "{case}: `{e}`"
            );
        }
        K::ArrCount => {
            assert!(matches!(e.kind(), ErrorKind::Invalid { msg, .. } if msg.contains("cannot fit")), "{case}: `{e}`");
            assert!(s.contains(&format!("`{}`", fl.owner)) && has_offset(&e), "{case}: `{e}`");
        }
        K::KeyLen | K::StrLen | K::NameLen => {
            assert!(
                matches!(e.kind(), ErrorKind::Truncated { offset, need, .. } if *offset as usize == fl.off + 8 && *need == v),
                "{case}: `{e}`"
            );
            if fl.k == K::StrLen {
                assert!(s.contains(&format!("`{}`", fl.owner)), "{case}: `{e}`");
            }
        }
        K::Ne => {
            // Either the element count overflows (Invalid at the field) or the data no longer
            // fits / breaks the type's block rule (Tensor).
            match e.kind() {
                ErrorKind::Invalid { offset, .. } => assert_eq!(*offset as usize, fl.off, "{case}: `{e}`"),
                ErrorKind::Tensor { name, .. } => assert_eq!(name, &fl.owner, "{case}"),
                other => panic!("{case}: unexpected {other:?}"),
            }
            assert!(s.contains(&format!("`{}`", fl.owner)), "{case}: `{e}`");
        }
        K::TOffset => {
            assert!(matches!(e.kind(), ErrorKind::Tensor { name, .. } if *name == fl.owner), "{case}: `{e}`");
        }
        K::NDims => {
            assert!(matches!(e.kind(), ErrorKind::Invalid { offset, .. } if *offset as usize == fl.off), "{case}: `{e}`");
            assert!(s.contains(&format!("`{}`", fl.owner)), "{case}: `{e}`");
        }
        k => panic!("{case}: not a count field {k:?}"),
    }
}

const COUNT_FIELDS: [K; 9] =
    [K::TensorCount, K::KvCount, K::KeyLen, K::StrLen, K::ArrCount, K::NameLen, K::NDims, K::Ne, K::TOffset];

#[test]
fn small_counts_and_lengths_huge() {
    let (b, l) = small();
    let mut n = 0;
    for fl in l.fields.iter().filter(|f| COUNT_FIELDS.contains(&f.k)) {
        let mut values = huge_values(b, fl);
        if fl.k == K::NDims {
            values = vec![u32::MAX as u64, 5, 1 << 16];
        }
        for v in values {
            check_huge(b, fl, v, &format!("{:?} of `{}` (elem {:?}) at {:#x} = {v}", fl.k, fl.owner, fl.elem, fl.off));
            n += 1;
        }
    }
    assert!(n > 100, "{n} cases");
}

/// The same on the real model, whose 8 MB of metadata make a lying count expensive if the
/// reader trusted it: every count and length of the header, the KV pairs' strings and arrays,
/// and the fields of the first and last tensor infos.
#[test]
fn tiny_counts_and_lengths_huge() {
    let (b, l) = tiny();
    let f = valid(b);
    let last = f.tensors().len() - 1;
    // Lies before the tensor data are checked on the header alone (the data cannot matter
    // there), which saves copying 70 MB per case.
    let head = &b[..f.data_start as usize];
    let late = late_offset(l);
    for fl in l.fields.iter().filter(|f| COUNT_FIELDS.contains(&f.k)) {
        let tensor_field = matches!(fl.k, K::NameLen | K::NDims | K::Ne | K::TOffset);
        if tensor_field && fl.index != 0 && fl.index != last {
            continue;
        }
        if fl.k == K::StrLen && fl.elem.is_some_and(|i| i > 0 && i < 5) {
            continue;
        }
        let base: &[u8] = if matches!(fl.k, K::Ne | K::TOffset) { b } else { head };
        let mut values = huge_values(base, fl);
        if fl.k == K::NDims {
            values = vec![u32::MAX as u64];
        }
        if fl.off >= late && values.len() > 3 {
            values = vec![values[0], values[3]];
        }
        for v in values {
            check_huge(base, fl, v, &format!("tiny: {:?} of `{}` (elem {:?}) at {:#x} = {v}", fl.k, fl.owner, fl.elem, fl.off));
        }
    }
}

/// Offset past which a corruption of the tiny model costs a parse of all its metadata: the
/// tail of the merges array.
fn late_offset(l: &Map) -> usize {
    l.fields.iter().find(|f| f.owner == "tokenizer.ggml.merges" && f.elem.is_some_and(|i| i >= 3)).unwrap().off
}

/// Counts that pass the "bytes left" cap but are still lies: the reader must not reserve
/// memory in proportion to them before the data is there.
#[test]
fn tiny_plausible_count_lies_do_not_allocate_in_proportion() {
    let (b, l) = tiny();
    let mut cases: Vec<(String, Vec<u8>, usize)> = Vec::new();
    for fl in l.of(K::KvCount).chain(l.of(K::TensorCount)).chain(l.of(K::ArrCount).filter(|f| f.elem.is_none())) {
        let left = (b.len() - fl.off - fl.len) as u64;
        let min = match (fl.k, fl.ty) {
            (K::KvCount, _) => 13,
            (K::TensorCount, _) => 32,
            (_, 6) | (_, 5) => 4,
            _ => 8,
        };
        // Fixed-size elements are only decoded once their bytes have been taken from the file,
        // so they may cost up to the bytes left; tables of strings, arrays, pairs and tensor
        // infos must not be reserved ahead of their entries.
        let limit = if fl.k == K::ArrCount && fl.ty != 8 && fl.ty != 9 { left as usize } else { 32 << 20 };
        cases.push((format!("{:?} of `{}` = {}", fl.k, fl.owner, left / min), set(b, fl, left / min), limit));
    }
    let mut bad = Vec::new();
    for (case, bytes, limit) in cases {
        let len = bytes.len();
        let o = parse(bytes, &case);
        assert!(o.result.is_err(), "{case}: accepted");
        // Well under the size of the file: the largest legitimate table here (280,147 merges)
        // needs about 7 MB.
        if o.peak > limit || o.total > 256 << 20 {
            bad.push(format!(
                "{case}: largest allocation {} MB, {} MB in all, for a {} MB file",
                o.peak >> 20,
                o.total >> 20,
                len >> 20
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Header fields.

#[test]
fn bad_magic() {
    for base in [&small().0, &tiny().0[..4096].to_vec()] {
        for m in [*b"GGUG", *b"GGML", *b"FUGG", [0; 4], *b"gguf", [0x47, 0x47, 0x55, 0xc6]] {
            let e = expect_err(patched(base, 0, &m), &format!("magic {m:?}"));
            assert!(matches!(e.kind(), ErrorKind::BadMagic { found } if found[..] == m[..]), "{e}");
            assert!(e.to_string().contains("offset 0x0"), "{e}");
        }
    }
    let e = expect_err(b"GGU".to_vec(), "3 bytes");
    assert!(matches!(e.kind(), ErrorKind::Truncated { what, .. } if what == "magic"), "{e}");
    let e = expect_err(Vec::new(), "empty");
    assert!(matches!(e.kind(), ErrorKind::Truncated { .. }), "{e}");
}

#[test]
fn unsupported_versions() {
    for base in [&small().0, &tiny().0[..4096].to_vec()] {
        for v in [0u32, 1, 4, 5, 0x0300_0000, u32::MAX] {
            let e = expect_err(patched(base, 4, &v.to_le_bytes()), &format!("version {v}"));
            assert!(matches!(e.kind(), ErrorKind::UnsupportedVersion { version } if *version == v), "{e}");
            assert!(e.to_string().contains("offset 0x4"), "{e}");
        }
    }
}

#[test]
fn unknown_value_types() {
    let (b, l) = small();
    for fl in l.of(K::ValueType).chain(l.of(K::ArrType)) {
        for v in [13u64, 99, u32::MAX as u64] {
            let case = format!("{:?} of `{}` = {v}", fl.k, fl.owner);
            let e = expect_err(set(b, fl, v), &case);
            assert!(
                matches!(e.kind(), ErrorKind::Invalid { msg, offset, .. }
                if msg.contains(&format!("type {v}")) && *offset as usize <= fl.off && fl.off - (*offset as usize) <= 4),
                "{case}: `{e}`"
            );
            assert!(e.to_string().contains(&format!("`{}`", fl.owner)), "{case}: `{e}`");
        }
    }
    // The real model: the first pair, the token array's element type and the last pair.
    let (b, l) = tiny();
    for fl in [
        l.find(K::ValueType, "general.architecture"),
        l.find(K::ArrType, "tokenizer.ggml.tokens"),
        l.find(K::ValueType, "general.quantization_version"),
    ] {
        let case = format!("tiny {:?} of `{}` = 13", fl.k, fl.owner);
        let e = expect_err(set(b, fl, 13), &case);
        assert!(matches!(e.kind(), ErrorKind::Invalid { msg, .. } if msg.contains("type 13")), "{case}: `{e}`");
        assert!(e.to_string().contains(&format!("`{}`", fl.owner)) && has_offset(&e), "{case}: `{e}`");
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor infos.

const UNSUPPORTED_IDS: [u32; 29] = [
    3,
    4,
    5,
    6,
    7,
    9,
    10,
    11,
    12,
    13,
    15,
    16,
    20,
    23,
    24,
    26,
    28,
    29,
    31,
    33,
    37,
    38,
    39,
    40,
    41,
    42,
    100,
    0x8000_0000,
    u32::MAX,
];

fn check_unknown_type(e: &Error, name: &str, id: u32, case: &str) {
    assert!(matches!(e.kind(), ErrorKind::Invalid { what, .. } if what.contains(name)), "{case}: `{e}`");
    let s = e.to_string();
    assert!(s.contains(&format!("`{name}`")) && has_offset(e) && s.contains(&id.to_string()), "{case}: `{e}`");
    match id {
        39 => assert!(s.contains("TL2"), "{case}: `{e}`"),
        38 => assert!(s.contains("TL1"), "{case}: `{e}`"),
        37 => assert!(s.contains("I8_S"), "{case}: `{e}`"),
        _ => {}
    }
}

#[test]
fn unknown_tensor_types() {
    let (b, l) = small();
    for fl in l.of(K::TType) {
        for id in UNSUPPORTED_IDS {
            let case = format!("type of `{}` = {id}", fl.owner);
            check_unknown_type(&expect_err(set(b, fl, id as u64), &case), &fl.owner, id, &case);
        }
    }
    let (b, l) = tiny();
    for (name, id) in
        [("token_embd.weight", 39), ("blk.0.attn_q.weight", 39), ("output_norm.weight", 37), ("blk.1.ffn_down.weight", 38)]
    {
        let case = format!("tiny: type of `{name}` = {id}");
        check_unknown_type(&expect_err(set(b, l.find(K::TType, name), id as u64), &case), name, id, &case);
    }
}

#[test]
fn bad_n_dims() {
    let check = |b: &[u8], fl: &Field, v: u32| {
        let case = format!("n_dims of `{}` = {v}", fl.owner);
        let e = expect_err(set(b, fl, v as u64), &case);
        assert!(
            matches!(e.kind(), ErrorKind::Invalid { what, offset, .. } if what.contains("n_dims") && *offset as usize == fl.off),
            "{case}: `{e}`"
        );
        assert!(e.to_string().contains(&format!("`{}`", fl.owner)), "{case}: `{e}`");
    };
    let (b, l) = small();
    for fl in l.of(K::NDims) {
        for v in [0, 5, 6, 64, u32::MAX] {
            check(b, fl, v);
        }
    }
    let (b, l) = tiny();
    check(b, l.find(K::NDims, "token_embd.weight"), 0);
    check(b, l.find(K::NDims, "output_norm.weight"), 5);
}

#[test]
fn zero_dimensions() {
    let (b, l) = small();
    for fl in l.of(K::Ne) {
        let case = format!("ne[{:?}] of `{}` = 0", fl.elem, fl.owner);
        let e = expect_err(set(b, fl, 0), &case);
        assert!(
            matches!(e.kind(), ErrorKind::Invalid { offset, msg, .. } if *offset as usize == fl.off && msg.contains("zero")),
            "{case}: `{e}`"
        );
        assert!(e.to_string().contains(&format!("`{}`", fl.owner)), "{case}: `{e}`");
    }
    let (b, l) = tiny();
    let fl = l.ne("token_embd.weight", 1);
    let e = expect_err(set(b, fl, 0), "tiny: token_embd ne1 = 0");
    assert!(matches!(e.kind(), ErrorKind::Invalid { offset, .. } if *offset as usize == fl.off), "`{e}`");
}

#[test]
fn dimension_products_overflow() {
    let (b, l) = small();
    // Element counts past u64 or past i64::MAX: rejected at the dimension that overflows.
    for (name, ne0, ne1) in [
        ("blk.0.attn_q.weight", 1u64 << 62, 4u64),
        ("blk.0.attn_q.weight", 128, 1 << 62),
        ("token_embd.weight", 1 << 40, 1 << 30),
        ("token_embd.weight", 1 << 32, 1 << 32),
        ("token_embd.weight", 1 << 62, 2),
        ("token_embd.weight", u64::MAX, u64::MAX),
    ] {
        let case = format!("`{name}` ne = [{ne0}, {ne1}]");
        let mut bytes = set(b, l.ne(name, 0), ne0);
        let f1 = l.ne(name, 1);
        bytes[f1.off..f1.off + 8].copy_from_slice(&ne1.to_le_bytes());
        let e = expect_err(bytes, &case);
        let at_field = if ne0 > i64::MAX as u64 { l.ne(name, 0).off } else { f1.off };
        assert!(
            matches!(e.kind(), ErrorKind::Invalid { offset, msg, .. } if *offset as usize == at_field && msg.contains("overflow")),
            "{case}: `{e}`"
        );
        assert!(e.to_string().contains(&format!("`{name}`")), "{case}: `{e}`");
    }
    // Element count fits in i64 but the byte size does not fit in u64: a Tensor error.
    let case = "norm.weight ne0 = 2^62 (F32: 2^64 bytes)";
    let e = expect_err(set(b, l.ne("norm.weight", 0), 1 << 62), case);
    assert!(
        matches!(e.kind(), ErrorKind::Tensor { name, msg } if name == "norm.weight" && msg.contains("overflow")),
        "{case}: `{e}`"
    );
    // Large but representable sizes: the data range check catches them.
    let e = expect_err(set(b, l.ne("norm.weight", 0), 1 << 40), "norm.weight ne0 = 2^40");
    assert!(matches!(e.kind(), ErrorKind::Tensor { name, msg } if name == "norm.weight" && msg.contains("exceeds")), "`{e}`");

    let (b, l) = tiny();
    let mut bytes = set(b, l.ne("token_embd.weight", 0), 1 << 40);
    let f1 = l.ne("token_embd.weight", 1);
    bytes[f1.off..f1.off + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = expect_err(bytes, "tiny: token_embd [2^40, 2^40]");
    assert!(matches!(e.kind(), ErrorKind::Invalid { offset, .. } if *offset as usize == f1.off), "`{e}`");
}

#[test]
fn i2s_shape_rules() {
    let check = |b: &[u8], l: &Map, name: &str, d: usize, v: u64, want: &str| {
        let case = format!("`{name}` ne[{d}] = {v}");
        let e = expect_err(set(b, l.ne(name, d), v), &case);
        assert!(matches!(e.kind(), ErrorKind::Tensor { name: n, msg } if n == name && msg.contains(want)), "{case}: `{e}`");
    };
    let (b, l) = small();
    for ne0 in [1, 64, 127, 129, 130, 192, 256 + 64] {
        check(b, l, "blk.0.attn_q.weight", 0, ne0, "multiple of 128");
    }
    for ne1 in [1, 2, 3, 5, 6] {
        check(b, l, "blk.0.attn_q.weight", 1, ne1, "multiple of 4");
    }
    // ne1 itself must be a multiple of 4 (../shared/docs/format.md §1.6), not just the row count.
    for (ne, ok) in [(vec![128u64, 2, 2], false), (vec![128, 1, 4], false), (vec![128, 4, 3], true), (vec![256, 8, 1, 5], true)] {
        let bytes = build(&[], &[spec("w", &ne, DType::I2S)], 32);
        if ok {
            assert_eq!(GgufFile::from_bytes(bytes).unwrap().tensor("w").unwrap().ne, ne);
        } else {
            let e = expect_err(bytes, &format!("I2_S ne {ne:?}"));
            assert!(matches!(e.kind(), ErrorKind::Tensor { name, msg } if name == "w" && msg.contains("multiple of 4")), "`{e}`");
        }
    }
    // 1-D I2_S.
    let mut bytes = build(&[], &[spec("w", &[128, 4], DType::I2S)], 32);
    let l1 = walk(&bytes, u64::MAX);
    bytes[l1.find(K::NDims, "w").off] = 1;
    let e = expect_err(bytes, "1-D I2_S");
    assert!(matches!(e.kind(), ErrorKind::Tensor { .. } | ErrorKind::Invalid { .. }), "`{e}`");

    let (b, l) = tiny();
    check(b, l, "blk.0.attn_q.weight", 0, 192, "multiple of 128");
    check(b, l, "blk.1.ffn_down.weight", 0, 448, "multiple of 128");
    check(b, l, "blk.0.attn_k.weight", 1, 126, "multiple of 4");
}

#[test]
fn data_offsets_outside_misaligned_and_overlapping() {
    let (b, l) = small();
    let f = valid(b);
    let rel_len = b.len() as u64 - f.data_start;
    for t in f.tensors() {
        let fl = l.find(K::TOffset, &t.name);
        let max_ok = rel_len - t.nbytes;
        for off in [rel_len.div_ceil(32) * 32, (max_ok / 32 + 1) * 32, u64::MAX - 31, 1 << 62, u64::MAX / 32 * 32] {
            let case = format!("offset of `{}` = {off:#x}", t.name);
            let e = expect_err(set(b, fl, off), &case);
            assert!(
                matches!(e.kind(), ErrorKind::Tensor { name, msg } if *name == t.name && msg.contains("exceeds file size")),
                "{case}: `{e}`"
            );
        }
        for off in [t.offset + 1, t.offset + 4, t.offset + 16, t.offset + 31, u64::MAX] {
            let case = format!("offset of `{}` = {off:#x}", t.name);
            let e = expect_err(set(b, fl, off), &case);
            assert!(
                matches!(e.kind(), ErrorKind::Tensor { name, msg } if *name == t.name && msg.contains("alignment")),
                "{case}: `{e}`"
            );
        }
    }
    // Overlaps: same start, and a start inside another tensor's data.
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    for (name, off) in [
        ("token_embd.weight", q.offset),
        ("token_embd.weight", q.offset + 64),
        ("norm.weight", q.offset + 128),
        ("blk.0.attn_q.weight", 0),
    ] {
        let case = format!("offset of `{name}` = {off:#x}");
        let e = expect_err(set(b, l.find(K::TOffset, name), off), &case);
        match e.kind() {
            ErrorKind::Tensor { name: n, msg } => {
                assert!(msg.contains("overlaps"), "{case}: `{e}`");
                let other = if n == name { "" } else { name };
                assert!(n == name || msg.contains(&format!("`{other}`")), "{case}: `{e}`");
            }
            other => panic!("{case}: {other:?}"),
        }
    }

    let (b, l) = tiny();
    let f = valid(b);
    let last = f.tensors().last().unwrap();
    let fl = l.find(K::TOffset, &last.name);
    let e = expect_err(set(b, fl, (b.len() as u64 - f.data_start).div_ceil(32) * 32), "tiny: last offset past the end");
    assert!(matches!(e.kind(), ErrorKind::Tensor { name, msg } if *name == last.name && msg.contains("exceeds")), "`{e}`");
    let e = expect_err(set(b, fl, last.offset + 8), "tiny: misaligned");
    assert!(matches!(e.kind(), ErrorKind::Tensor { name, msg } if *name == last.name && msg.contains("alignment")), "`{e}`");
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    let e = expect_err(set(b, l.find(K::TOffset, "blk.0.attn_k.weight"), q.offset), "tiny: k over q");
    assert!(matches!(e.kind(), ErrorKind::Tensor { msg, .. } if msg.contains("overlaps")), "`{e}`");
    let s = e.to_string();
    assert!(s.contains("`blk.0.attn_q.weight`") && s.contains("`blk.0.attn_k.weight`"), "{s}");
}

// ---------------------------------------------------------------------------------------------
// Duplicates, UTF-8, bools, names, nesting.

#[test]
fn duplicate_keys_and_tensor_names() {
    let mut md = small_metadata();
    md.push(kv("tokenizer.ggml.add_bos_token", Value::Bool(false)));
    let e = expect_err(build(&md, &small_tensors(), 32), "duplicate key");
    assert!(
        matches!(e.kind(), ErrorKind::Invalid { msg, .. } if msg.contains("duplicate key `tokenizer.ggml.add_bos_token`")),
        "`{e}`"
    );
    assert!(has_offset(&e));
    // Same key, different type.
    let mut md = small_metadata();
    md.insert(1, kv("general.architecture", Value::U32(1)));
    let e = expect_err(build(&md, &small_tensors(), 32), "duplicate key, other type");
    assert!(matches!(e.kind(), ErrorKind::Invalid { msg, .. } if msg.contains("`general.architecture`")), "`{e}`");

    let mut ts = small_tensors();
    ts.push(spec("norm.weight", &[16], DType::F32));
    let e = expect_err(build(&small_metadata(), &ts, 32), "duplicate tensor");
    assert!(matches!(e.kind(), ErrorKind::Invalid { msg, .. } if msg.contains("duplicate tensor `norm.weight`")), "`{e}`");
    assert!(has_offset(&e));

    // The real model: a key and a tensor name patched into another one of the same length.
    let (b, l) = tiny();
    let k = l.find(K::Key, "tokenizer.ggml.eos_token_id");
    let e = expect_err(patched(b, k.off, b"tokenizer.ggml.bos_token_id"), "tiny: duplicate key");
    assert!(
        matches!(e.kind(), ErrorKind::Invalid { msg, offset, .. }
        if msg.contains("`tokenizer.ggml.bos_token_id`") && *offset as usize == k.off - 8),
        "`{e}`"
    );
    let n = l.find(K::Name, "blk.1.attn_q.weight");
    let e = expect_err(patched(b, n.off, b"blk.0.attn_q.weight"), "tiny: duplicate tensor");
    assert!(
        matches!(e.kind(), ErrorKind::Invalid { msg, offset, .. }
        if msg.contains("duplicate tensor `blk.0.attn_q.weight`") && *offset as usize == n.off - 8),
        "`{e}`"
    );
}

#[test]
fn invalid_utf8() {
    let (b, l) = small();
    let utf8_err = |bytes: Vec<u8>, at: usize, case: &str| -> Error {
        let e = expect_err(bytes, case);
        assert!(
            matches!(e.kind(), ErrorKind::Invalid { msg, offset, .. } if msg.contains("UTF-8") && *offset as usize == at),
            "{case}: `{e}`"
        );
        e
    };
    // A key: the reader cannot name it, so it gives its index and offset.
    let k = l.find(K::Key, "tokenizer.ggml.tokens");
    for (i, bad) in [(0usize, 0xffu8), (3, 0x80), (k.len - 1, 0xc3)] {
        let e = utf8_err(patched(b, k.off + i, &[bad]), k.off + i, &format!("key byte {i} = {bad:#x}"));
        assert!(e.to_string().contains(&format!("metadata key #{}", k.index)), "`{e}`");
    }
    // A string value.
    let s = l.find(K::Str, "general.architecture");
    let e = utf8_err(patched(b, s.off + 2, &[0xfe]), s.off + 2, "string value");
    assert!(e.to_string().contains("`general.architecture`"), "`{e}`");
    // A string array element: the index is reported.
    let el = l.fields.iter().find(|f| f.k == K::Str && f.owner == "tokenizer.ggml.tokens" && f.elem == Some(1)).unwrap();
    let e = utf8_err(patched(b, el.off + 1, &[0xff]), el.off + 1, "token 1");
    assert!(e.to_string().contains("`tokenizer.ggml.tokens`[1]"), "`{e}`");
    // An over-long encoding and a lone surrogate ("Ġ" is c4 a0).
    let el2 = l.fields.iter().find(|f| f.k == K::Str && f.owner == "tokenizer.ggml.tokens" && f.elem == Some(2)).unwrap();
    let e = utf8_err(patched(b, el2.off, &[0xc0, 0x80]), el2.off, "over-long NUL");
    assert!(e.to_string().contains("[2]"), "`{e}`");
    let e = utf8_err(patched(b, el2.off, &[0xed, 0xa0]), el2.off, "surrogate prefix");
    assert!(e.to_string().contains("[2]"), "`{e}`");
    // A tensor name.
    let n = l.find(K::Name, "token_embd.weight");
    let e = utf8_err(patched(b, n.off + 5, &[0xff]), n.off + 5, "tensor name");
    assert!(e.to_string().contains("tensor #2 name"), "`{e}`");

    let (b, l) = tiny();
    let el = l.fields.iter().find(|f| f.k == K::Str && f.owner == "tokenizer.ggml.tokens" && f.elem == Some(2)).unwrap();
    let e = utf8_err(patched(b, el.off, &[0xff]), el.off, "tiny: token 2");
    assert!(e.to_string().contains("`tokenizer.ggml.tokens`[2]"), "`{e}`");
    let last_merge = l.fields.iter().rfind(|f| f.k == K::Str && f.owner == "tokenizer.ggml.merges").unwrap();
    let e = utf8_err(patched(b, last_merge.off, &[0x80]), last_merge.off, "tiny: last merge");
    assert!(e.to_string().contains("`tokenizer.ggml.merges`[280146]"), "`{e}`");
}

#[test]
fn bool_bytes_other_than_0_or_1() {
    let (b, l) = small();
    for fl in l.of(K::BoolByte) {
        for v in [2u8, 0x80, 0xff] {
            let case = format!("bool of `{}` {:?} = {v}", fl.owner, fl.elem);
            let e = expect_err(patched(b, fl.off, &[v]), &case);
            assert!(
                matches!(e.kind(), ErrorKind::Invalid { msg, offset, .. } if msg.contains(&format!("bool byte {v}")) && *offset as usize == fl.off),
                "{case}: `{e}`"
            );
            assert!(e.to_string().contains(&format!("`{}`", fl.owner)), "{case}: `{e}`");
            if let Some(i) = fl.elem {
                assert!(e.to_string().contains(&format!("[{i}]")), "{case}: `{e}`");
            }
        }
    }
    let (b, l) = tiny();
    let fl = l.find(K::BoolByte, "tokenizer.ggml.add_bos_token");
    let e = expect_err(patched(b, fl.off, &[2]), "tiny: add_bos_token = 2");
    assert!(matches!(e.kind(), ErrorKind::Invalid { offset, .. } if *offset as usize == fl.off), "`{e}`");
}

#[test]
fn tensor_name_length_limit() {
    for len in [63usize, 64, 65, 200, 4096] {
        let name = "n".repeat(len);
        let mut ts = small_tensors();
        ts.push(spec(&name, &[8], DType::F32));
        let bytes = build(&small_metadata(), &ts, 32);
        if len <= 63 {
            assert!(GgufFile::from_bytes(bytes).unwrap().tensor(&name).is_some());
            continue;
        }
        let e = expect_err(bytes, &format!("name of {len} bytes"));
        assert!(
            matches!(e.kind(), ErrorKind::Invalid { what, msg, .. } if what == "tensor #3 name" && msg.contains(&format!("{len} bytes"))),
            "`{e}`"
        );
        assert!(has_offset(&e));
    }
}

#[test]
fn array_nesting_depth() {
    fn nest(depth: usize) -> Array {
        (1..depth).fold(Array::U8(vec![1]), |a, _| Array::Array(vec![a]))
    }
    let ok = build(&[kv("deep", Value::Array(nest(8)))], &[], 32);
    assert_eq!(GgufFile::from_bytes(ok).unwrap().get("deep"), Some(&Value::Array(nest(8))));
    for depth in [9, 10, 64] {
        let e = expect_err(build(&[kv("deep", Value::Array(nest(depth)))], &[], 32), &format!("depth {depth}"));
        assert!(matches!(e.kind(), ErrorKind::Invalid { msg, .. } if msg.contains("nested deeper")), "`{e}`");
        assert!(e.to_string().contains("`deep`") && has_offset(&e), "`{e}`");
    }
    // A deep chain built by hand, far past any writer: no stack overflow, quick error.
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(b'k');
    b.extend_from_slice(&9u32.to_le_bytes());
    for _ in 0..100_000 {
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
    }
    let e = expect_err(b, "100k nested arrays");
    assert!(matches!(e.kind(), ErrorKind::Invalid { .. }), "`{e}`");
}

#[test]
fn tensor_count_and_kv_count_one_too_many() {
    // The reader then parses padding or data as a header entry; it must fail cleanly.
    let (b, l) = small();
    for (k, delta) in [(K::KvCount, 1u64), (K::TensorCount, 1), (K::TensorCount, 2)] {
        let fl = l.of(k).next().unwrap();
        let v = u64::from_le_bytes(b[fl.off..fl.off + 8].try_into().unwrap()) + delta;
        let _ = expect_err(set(b, fl, v), &format!("{k:?} + {delta}"));
    }
}

/// Every header byte of the small file set to 0x00, 0xff and its value ± 1: no panic, bounded
/// allocation (the result may be Ok: e.g. a changed scalar value).
#[test]
fn small_header_byte_mutations_never_panic() {
    let (b, l) = small();
    let mut errs = 0;
    for i in 0..l.infos_end {
        for v in [0u8, 0xff, b[i].wrapping_add(1), b[i].wrapping_sub(1), b[i] ^ 0x80] {
            let bytes = patched(b, i, &[v]);
            let len = bytes.len();
            let o = parse(bytes, &format!("byte {i:#x} = {v:#x}"));
            assert!(o.peak <= alloc_limit(len), "byte {i:#x} = {v:#x}: {} bytes", o.peak);
            if let Ok(f) = o.result {
                for t in f.tensors() {
                    let d = f.tensor_data(t);
                    assert_eq!(d.len() as u64, t.nbytes);
                    let n = t.n_elements() as usize;
                    assert_eq!(gguf::types::decode_to_f32(t.dtype, d, n).len(), n);
                }
            } else {
                errs += 1;
            }
        }
    }
    assert!(errs > l.infos_end, "{errs}");
}

/// The SentencePiece model (5 MB, a 0.7 MB header with 32,000 tokens), with its layout.
fn b1() -> &'static (Vec<u8>, Map) {
    static B: OnceLock<(Vec<u8>, Map)> = OnceLock::new();
    B.get_or_init(|| {
        let b = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/models/b1-spm-i2_s.gguf")).unwrap();
        let l = walk(&b, 3);
        (b, l)
    })
}

/// 300 seeded random mutations of a shared model's header, 1 to 3 edits each: half write a
/// boundary value (0, 1, all ones, the value ± 1, a random value) into a field the walker
/// found (counts, lengths, types, dims, offsets, array elements), half set a random header
/// byte. Each must parse or fail without a panic and with bounded allocation; an accepted file
/// must give tensor views of the validated size, decode, and pass through `check_tensors`.
/// proptest's ChaCha generator with its fixed seed makes every run the same.
#[test]
fn shared_model_header_random_mutations_never_panic() {
    use proptest::prelude::Rng;
    use proptest::test_runner::{RngAlgorithm, TestRng};

    let (b, l) = b1();
    let mut rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let (mut ok, mut err) = (0, 0);
    for case in 0..300 {
        let mut bytes = b.clone();
        let mut what = Vec::new();
        for _ in 0..1 + rng.next_u32() % 3 {
            if rng.next_u32().is_multiple_of(2) {
                let f = &l.fields[rng.next_u32() as usize % l.fields.len()];
                let old = u64::from_le_bytes({
                    let mut v = [0u8; 8];
                    let n = f.len.min(8);
                    v[..n].copy_from_slice(&bytes[f.off..f.off + n]);
                    v
                });
                let v = match rng.next_u32() % 6 {
                    0 => 0,
                    1 => 1,
                    2 => u64::MAX,
                    3 => old.wrapping_add(1),
                    4 => old.wrapping_sub(1),
                    _ => rng.next_u64(),
                };
                let n = f.len.min(8);
                bytes[f.off..f.off + n].copy_from_slice(&v.to_le_bytes()[..n]);
                what.push(format!("{:?} of `{}` at {:#x} = {v:#x}", f.k, f.owner, f.off));
            } else {
                let at = rng.next_u32() as usize % l.infos_end;
                let v = rng.next_u32() as u8;
                bytes[at] = v;
                what.push(format!("byte {at:#x} = {v:#x}"));
            }
        }
        let case = format!("mutation {case}: {}", what.join(", "));
        let len = bytes.len();
        let o = parse(bytes, &case);
        assert!(o.peak <= alloc_limit(len), "{case}: largest allocation {} bytes", o.peak);
        assert!(o.elapsed < Duration::from_secs(20), "{case}: took {:?}", o.elapsed);
        match o.result {
            Ok(f) => {
                ok += 1;
                for t in f.tensors() {
                    let d = f.tensor_data(t);
                    assert_eq!(d.len() as u64, t.nbytes, "{case}");
                    if t.n_elements() <= 1 << 16 {
                        let n = t.n_elements() as usize;
                        assert_eq!(gguf::types::decode_to_f32(t.dtype, d, n).len(), n, "{case}");
                    }
                }
                let r = catch_unwind(AssertUnwindSafe(|| gguf::check_tensors(&f)));
                let r = r.unwrap_or_else(|_| panic!("{case}: check_tensors panicked"));
                assert_eq!(r.map(|r| r.tensors).ok(), Some(f.tensors().len()), "{case}");
            }
            Err(_) => err += 1,
        }
    }
    // Both outcomes occur, so both paths are exercised.
    assert!(ok >= 30 && err >= 30, "{ok} accepted, {err} refused");
}
