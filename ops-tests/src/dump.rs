//! The reference's tensor dumps (`../shared/reference/*/tensors*/index.json`): one entry per
//! graph node of bitnet.cpp, in execution order, with its `.npy` file.

use std::path::{Path, PathBuf};

/// One dumped graph node.
pub struct DumpNode {
    /// ggml's node index.
    pub idx: usize,
    /// ggml's tensor name (`attn_norm-0`, …).
    pub name: String,
    /// ggml's op name.
    pub op: String,
    /// Name of the first source tensor, if any.
    pub src0: Option<String>,
    /// Name of the second source tensor, if any.
    pub src1: Option<String>,
    /// The `.npy` file (its own `file`, or the one it is `same_as`); empty if neither.
    pub file: PathBuf,
}

impl DumpNode {
    /// Shape and f32 data of the node's `.npy` file.
    pub fn load(&self) -> (Vec<usize>, Vec<f32>) {
        let a = gguf::npy::read_f32(&self.file).unwrap_or_else(|e| panic!("{}: {e}", self.file.display()));
        (a.shape, a.data)
    }

    /// The node's f32 data.
    pub fn data(&self) -> Vec<f32> {
        self.load().1
    }

    /// `name (op #idx)`, for messages.
    pub fn label(&self) -> String {
        format!("{} ({} #{})", self.name, self.op, self.idx)
    }
}

/// Every entry of `dir/index.json`, in execution order.
pub fn read_index(dir: &Path) -> Vec<DumpNode> {
    let text = std::fs::read_to_string(dir.join("index.json")).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let index: serde_json::Value = serde_json::from_str(&text).expect("index.json");
    index["tensors"]
        .as_array()
        .expect("tensors")
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().map(str::to_owned);
            let file = match (e["file"].as_str(), e["same_as"].as_str()) {
                (Some(f), _) => dir.join(f),
                (None, Some(f)) => dir.join(f),
                _ => PathBuf::new(),
            };
            DumpNode {
                idx: e["idx"].as_u64().expect("idx") as usize,
                name: s("name").expect("name"),
                op: s("op").expect("op"),
                src0: s("src0"),
                src1: s("src1"),
                file,
            }
        })
        .collect()
}
