//! A background `inlet run` whose log goes to a file, killed when dropped: a failing test
//! leaves no daemon behind.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `inlet run`, killed when dropped.
pub struct Inlet(pub Child);

impl Drop for Inlet {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `inlet run -c CFG` with its log appended to `log` (a pipe nobody reads would fill and stall
/// it), its HTTP endpoints on a free port.
pub fn spawn_logged(cfg: &Path, log: &Path) -> Inlet {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the log file");
    // INLET_BIN: a copy of the binary for a long soak, which a rebuild of the shared target
    // folder must not change under it.
    let bin = std::env::var_os("INLET_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_inlet").into());
    Command::new(bin)
        .args([
            "run",
            "-c",
            cfg.to_str().expect("a UTF-8 path"),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Inlet)
        .expect("start inlet run")
}
