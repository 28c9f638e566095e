//! Structured logs: one JSON object per line on stderr, which Spin, SpinKube
//! and Fermyon Cloud collect as the component's log.
//!
//! Callers pass only values that are safe to record: never a key, token,
//! secret or protected field value.

use serde_json::Value;

/// Writes one log line with an event name and fields.
pub fn emit(level: &str, event: &str, fields: &[(&str, Value)]) {
    // One write per line: `eprintln!` formats a value in many small writes
    // to the unbuffered stderr, and the runtime interleaves the pieces of
    // requests running at the same time, garbling their lines.
    write_line(&cmk_core::logline::format(level, event, fields));
}

thread_local! {
    /// The host's stderr stream, taken once per instance.
    static STDERR: wasi::io::streams::OutputStream = wasi::cli::stderr::get_stderr();
}

/// Writes `line` to stderr in one `blocking-write-and-flush` call when it
/// fits (4096 bytes, the interface's limit per call), else in as few: the
/// standard library's stderr makes three calls per write
/// (`check-write`, `write`, `blocking-flush`).
fn write_line(line: &[u8]) {
    STDERR.with(|s| {
        for piece in line.chunks(4096) {
            if s.blocking_write_and_flush(piece).is_err() {
                return;
            }
        }
    });
}
