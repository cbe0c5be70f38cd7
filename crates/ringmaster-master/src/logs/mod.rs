//! The application log: every worker's output, the migrate process's and
//! the master's own events, tagged, bounded, and written by one sink thread.
//!
//! - **Capture** (`capture`). Each worker gets three pipes: its `tracing`
//!   output (fd [`LOG_FD`], which the worker writes without ever
//!   blocking), and its stdout and stderr (panics, prints, C libraries). A
//!   reader task per pipe ([`read_pipe`]) cuts the stream at the last
//!   newline and sends the whole lines, with the worker's [`Source`], to
//!   the sink (the migrate process's stdout and stderr are read the same
//!   way); a line longer than `server.log_max_line` is cut with a marker,
//!   and a last line without newline (an abort) is kept.
//! - **The hub** (`hub`, [`LogHub`]). The queue to the sink is bounded in
//!   bytes (`server.log_buffer`); beyond it lines are dropped and counted,
//!   so the pipes are always drained and no worker blocks on the master.
//!   It keeps the last lines in a ring for `logs` and sends new ones to
//!   `logs --follow` clients.
//! - **The sink thread** (`sink`) tags each line (`tag`: a prefix in text,
//!   fields in JSON) and writes it to the terminal or the file; when
//!   writing fails (disk full, directory gone) it drops and counts lines,
//!   retries every second, and writes "N lines dropped" once it can again.
//! - **Rotation** (`rotate`). The sink rotates the file by size and/or
//!   daily, keeps `log_keep` files, gzips them if asked, and reopens the
//!   file on SIGUSR1.
//!
//! [`LOG_FD`]: ringmaster_proto::handoff::LOG_FD

mod capture;
mod hub;
mod rotate;
mod sink;
mod tag;

pub use capture::read_pipe;
pub use hub::{Block, HubWriter, Line, LogHub, LogStats};
pub use tag::Source;
