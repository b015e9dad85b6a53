//! Progress bars on standard error for long work: shown only when standard
//! error is a terminal, not asked to be quiet, and the work has taken over
//! a second (short runs print nothing extra).

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Bar width in characters.
const WIDTH: usize = 40;

/// A progress bar redrawn in place on standard error.
#[derive(Debug)]
pub struct Bar {
    shown: bool,
    enabled: bool,
    started: Instant,
}

impl Bar {
    /// A bar, drawn only when `enabled` and standard error is a terminal.
    pub fn new(enabled: bool) -> Bar {
        Bar {
            shown: false,
            enabled: enabled && std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    /// Seconds since the bar was made.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Redraws the bar at `fraction` (0..=1) with `text` after it.
    pub fn update(&mut self, fraction: f64, text: &str) {
        if !self.enabled || self.elapsed_s() < 1.0 {
            return;
        }
        let f = fraction.clamp(0.0, 1.0);
        let filled = ((f * WIDTH as f64) as usize).min(WIDTH);
        eprint!(
            "\r[{}{}] {:5.1}%  {text}  {:.1}s wall\x1b[K",
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            f * 100.0,
            self.elapsed_s()
        );
        let _ = std::io::stderr().flush();
        self.shown = true;
    }

    /// Ends the bar's line, if one was drawn.
    pub fn finish(&mut self) {
        if self.shown {
            eprintln!();
            self.shown = false;
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}
