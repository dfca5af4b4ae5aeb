//! Progress reporting: indicatif bars on a terminal, plain lines otherwise (CI logs).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone)]
pub enum Display {
    /// Bars on stderr.
    Bars(MultiProgress),
    /// A line on stderr at most every few seconds per stage.
    Plain,
    /// Plain lines, plus details (each stage's cache key, swept temp builds).
    Verbose,
    /// Warnings and failures only (`-q`).
    Quiet,
    /// Nothing (benchmarks, library use).
    Hidden,
}

impl Display {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn auto() -> Self {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            Display::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Display::Plain
        }
    }

    /// `-q` (negative), nothing, `-v` (positive): quiet, [`Display::auto`], verbose.
    pub fn for_verbosity(level: i8) -> Self {
        match level {
            ..0 => Display::Quiet,
            0 => Self::auto(),
            _ => Display::Verbose,
        }
    }

    /// Whether [`Display::line`] prints (false when quiet or hidden).
    pub fn shows_lines(&self) -> bool {
        matches!(self, Display::Bars(_) | Display::Plain | Display::Verbose)
    }

    /// Prints a log line without tearing bars.
    pub fn line(&self, msg: &str) {
        match self {
            Display::Bars(m) => {
                let _ = m.println(msg);
            }
            Display::Plain | Display::Verbose => eprintln!("{msg}"),
            Display::Quiet | Display::Hidden => {}
        }
    }

    /// A warning or failure: shown unless hidden, even when quiet.
    pub fn alert(&self, msg: &str) {
        match self {
            Display::Quiet => eprintln!("{msg}"),
            _ => self.line(msg),
        }
    }

    /// A detail shown only when verbose.
    pub fn detail(&self, msg: &str) {
        if let Display::Verbose = self {
            eprintln!("{msg}");
        }
    }

    pub(crate) fn stage(&self, id: &str) -> Progress {
        let bar = match self {
            Display::Bars(m) => {
                let b = m.add(ProgressBar::new(0));
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>24} {bar:30} {pos}/{len} {msg} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_prefix(id.to_string());
                Some(b)
            }
            _ => None,
        };
        Progress {
            inner: Arc::new(Mutex::new(Inner {
                id: id.to_string(),
                bar,
                plain: matches!(self, Display::Plain | Display::Verbose),
                total: 0,
                pos: 0,
                unit: String::new(),
                last_print: Instant::now(),
            })),
        }
    }

    pub(crate) fn overall(&self, total: u64) -> Option<ProgressBar> {
        match self {
            Display::Bars(m) => {
                let b = m.add(ProgressBar::new(total));
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>24} {bar:30} {pos}/{len} stages {elapsed}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_prefix("overall");
                Some(b)
            }
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Inner {
    id: String,
    bar: Option<ProgressBar>,
    plain: bool,
    total: u64,
    pos: u64,
    unit: String,
    last_print: Instant,
}

/// A stage's progress handle, in the stage's own units.
#[derive(Debug, Clone)]
pub struct Progress {
    inner: Arc<Mutex<Inner>>,
}

impl Progress {
    /// A handle that shows nothing.
    pub fn hidden(id: &str) -> Self {
        Display::Hidden.stage(id)
    }

    /// Sets the amount of work and its unit (`iters`, `images`).
    pub fn set_total(&self, total: u64, unit: &str) {
        if let Ok(mut g) = self.inner.lock() {
            g.total = total;
            g.pos = 0;
            g.unit = unit.to_string();
            if let Some(b) = &g.bar {
                b.set_length(total);
                b.set_position(0);
                b.set_message(unit.to_string());
            }
        }
    }

    /// Advances by `n` units.
    pub fn inc(&self, n: u64) {
        if let Ok(mut g) = self.inner.lock() {
            g.pos += n;
            if let Some(b) = &g.bar {
                b.inc(n);
            } else if g.plain
                && (g.last_print.elapsed() > Duration::from_secs(5) || g.pos == g.total)
            {
                g.last_print = Instant::now();
                eprintln!("  {}: {}/{} {}", g.id, g.pos, g.total, g.unit);
            }
        }
    }

    /// A short status message.
    pub fn message(&self, msg: &str) {
        if let Ok(g) = self.inner.lock() {
            if let Some(b) = &g.bar {
                b.set_message(format!("{} {msg}", g.unit));
            } else if g.plain {
                eprintln!("  {}: {msg}", g.id);
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Ok(g) = self.inner.lock()
            && let Some(b) = &g.bar
        {
            b.finish_and_clear();
        }
    }
}
