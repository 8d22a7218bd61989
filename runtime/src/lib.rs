//! bitnet-graph's runtime: the library every front door (the CLI, the server, the Python
//! package) calls. It holds a loaded model once and advances many sequences together.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod hub;
