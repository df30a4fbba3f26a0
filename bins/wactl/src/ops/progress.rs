//! Progress bars for `wactl cluster catch-up`: on a terminal, one line per
//! task redrawn in place; otherwise (a pipe, a log) a line whenever a task
//! has moved on by a tenth, so logs stay short and readable.

use std::io::{IsTerminal, Write};

pub struct Bars {
    tty: bool,
    /// Lines drawn last time (to move back up over them).
    drawn: usize,
    /// Per label: the tenth last printed (not on a terminal).
    printed: std::collections::HashMap<String, u64>,
}

/// One task's progress: `done` of about `total` bytes.
pub struct Bar {
    pub label: String,
    pub done: u64,
    pub total: u64,
    /// Shown after the bar ("caught up", "down", ...).
    pub note: String,
}

const WIDTH: u64 = 30;

impl Bars {
    pub fn new() -> Bars {
        Bars {
            tty: std::io::stdout().is_terminal(),
            drawn: 0,
            printed: Default::default(),
        }
    }

    /// Draws `bars` (replacing the last drawing on a terminal).
    pub fn draw(&mut self, bars: &[Bar]) {
        let mut out = std::io::stdout().lock();
        if self.tty {
            if self.drawn > 0 {
                let _ = write!(out, "\x1b[{}A", self.drawn);
            }
            for b in bars {
                let _ = writeln!(out, "\x1b[2K{}", line(b));
            }
            self.drawn = bars.len();
        } else {
            for b in bars {
                let tenth = percent(b) / 10;
                let last = self.printed.insert(b.label.clone(), tenth);
                if last != Some(tenth) {
                    let _ = writeln!(out, "{}", line(b));
                }
            }
        }
        let _ = out.flush();
    }
}

fn percent(b: &Bar) -> u64 {
    if b.total == 0 {
        return if b.done > 0 { 100 } else { 0 };
    }
    (b.done.min(b.total) * 100) / b.total
}

/// `label [#########.....]  62%  12.0 MiB of 19.3 MiB  note`
pub fn line(b: &Bar) -> String {
    let pct = percent(b);
    let filled = (pct * WIDTH / 100) as usize;
    format!(
        "{}  [{}{}] {pct:>3}%  {} of {}  {}",
        b.label,
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled),
        mib(b.done),
        mib(b.total),
        b.note
    )
    .trim_end()
    .to_string()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_shows_its_share() {
        let b = Bar {
            label: "store-2".into(),
            done: 3 << 20,
            total: 12 << 20,
            note: "copying".into(),
        };
        assert_eq!(
            line(&b),
            "store-2  [#######.......................]  25%  3.0 MiB of 12.0 MiB  copying"
        );
        // More than announced (the primary kept writing): full, not over.
        let over = Bar {
            done: 13 << 20,
            note: String::new(),
            ..b
        };
        assert!(line(&over).contains("[##############################] 100%"));
    }
}
