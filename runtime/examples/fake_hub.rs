//! Serves files as a fake Hugging Face hub on 127.0.0.1, for trying `-hf`/`pull` or another
//! client (huggingface_hub with `HF_ENDPOINT`) without the internet:
//!
//! ```sh
//! cargo run -p runtime --features fake-hub --example fake_hub -- test/tiny=../shared/models/tiny-i2_s.gguf
//! # prints http://127.0.0.1:PORT; then, in another shell:
//! HF_ENDPOINT=http://127.0.0.1:PORT bitnet-graph pull test/tiny
//! ```
//!
//! Each argument is `OWNER/NAME=PATH`; the file is served under its own name. Stops on Ctrl-C.

use std::path::Path;
use std::process::ExitCode;

use runtime::hub::testing::FakeHub;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: fake_hub OWNER/NAME=PATH...");
        return ExitCode::from(2);
    }
    let hub = FakeHub::start();
    for a in &args {
        let Some((repo, path)) = a.split_once('=') else {
            eprintln!("fake_hub: `{a}`: expected OWNER/NAME=PATH");
            return ExitCode::from(2);
        };
        let path = Path::new(path);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Err(e) = hub.add_file_from(repo, &name, path) {
            eprintln!("fake_hub: {}: {e}", path.display());
            return ExitCode::from(2);
        }
        eprintln!("fake_hub: {repo}: {name}");
    }
    println!("{}", hub.url());
    loop {
        std::thread::park();
    }
}
