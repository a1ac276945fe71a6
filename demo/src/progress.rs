//! A progress indicator on stderr for runs longer than a second: a self-overwriting line on a
//! terminal, an occasional plain line otherwise (logs).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Progress of one run.
#[derive(Debug)]
pub struct Progress {
    label: String,
    enabled: bool,
    terminal: bool,
    started: Instant,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    /// A progress indicator for `label`; `enabled = false` never prints.
    pub fn new(label: &str, enabled: bool) -> Self {
        Progress {
            label: label.to_string(),
            enabled,
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: None,
            shown: false,
        }
    }

    /// A disabled indicator.
    pub fn hidden() -> Self {
        Progress::new("", false)
    }

    /// Reports `done` of `total` steps (cheap when nothing is printed).
    pub fn tick(&mut self, done: u64, total: u64) {
        if !self.enabled || !done.is_multiple_of(64) {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.started) < Duration::from_secs(1) {
            return;
        }
        let every = if self.terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(2)
        };
        if self.last.is_some_and(|l| now.duration_since(l) < every) {
            return;
        }
        self.last = Some(now);
        let pct = done * 100 / total.max(1);
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(
                err,
                "\r  {}: {pct:3}% ({done}/{total} requests)",
                self.label
            );
        } else {
            let _ = writeln!(err, "  {}: {pct}% ({done}/{total} requests)", self.label);
        }
        let _ = err.flush();
        self.shown = true;
    }

    /// Clears the line (terminal) once the run is over.
    pub fn finish(&mut self) {
        if self.shown && self.terminal {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{:70}\r", "");
            let _ = err.flush();
        }
        self.shown = false;
    }
}
