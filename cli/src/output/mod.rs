//! Where remote output goes in each mode: live lines as they arrive, gathered
//! or per-host blocks after completion, or JSON Lines.
//!
//! Live and JSON lines come from the run's `RunEvent::Line`s, written by the
//! main thread (`track`); tasks then keep nothing (`Output::null`). `-b` and
//! `-L` need every host's whole output at the end: their tasks capture it
//! into the report.
//!
//! May use: `args`, `hosts`.

pub mod gather;
pub mod json;

use std::io::{IsTerminal, Write};

use ssh_parallel::{Output, OutputStream};

use crate::args::OutputArgs;

/// The output mode chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `host: line` as lines arrive (the default); `prefix` false with `-N`.
    Live {
        /// Whether lines carry the `host: ` prefix.
        prefix: bool,
    },
    /// `-b`: hosts with identical output under one folded node set, at the end.
    Gather,
    /// `-L`: each host's lines at the end, hosts in node order.
    ByHost {
        /// Whether lines carry the `host: ` prefix.
        prefix: bool,
    },
    /// `--json`: JSON Lines on stdout.
    Json,
}

impl Mode {
    /// The mode the flags select.
    pub fn from_args(a: &OutputArgs) -> Mode {
        if a.gather {
            Mode::Gather
        } else if a.by_host {
            Mode::ByHost { prefix: !a.no_prefix }
        } else if a.json {
            Mode::Json
        } else {
            Mode::Live { prefix: !a.no_prefix }
        }
    }

    /// Whether output is held until the end (then a progress display helps).
    pub fn is_deferred(self) -> bool {
        !matches!(self, Mode::Live { .. })
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl From<OutputStream> for Stream {
    fn from(s: OutputStream) -> Stream {
        match s {
            OutputStream::Stdout => Stream::Stdout,
            OutputStream::Stderr => Stream::Stderr,
        }
    }
}

impl Stream {
    /// The name used in JSON records.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Whether to colour what goes to each of our streams: only terminals, and
/// never when `NO_COLOR` is set to anything non-empty (no-color.org).
#[derive(Debug, Clone, Copy)]
pub struct Colours {
    /// Colour on stdout.
    pub stdout: bool,
    /// Colour on stderr.
    pub stderr: bool,
}

impl Colours {
    /// Decides from the environment and the streams.
    pub fn detect() -> Colours {
        let allowed = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Colours {
            stdout: allowed && std::io::stdout().is_terminal(),
            stderr: allowed && std::io::stderr().is_terminal(),
        }
    }

    /// Whether lines for `stream` are coloured.
    pub fn on(self, stream: Stream) -> bool {
        match stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        }
    }
}

/// Writes `text` in `colour` (an SGR code) when `on`.
pub fn paint(text: &str, colour: &str, on: bool) -> String {
    if on {
        format!("\x1b[{colour}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// One line on our stdout or stderr, with the `host: ` prefix when asked,
/// written whole under the stream's lock so that hosts never interleave
/// within a line. A closed pipe (`| head`) is not an error worth reporting.
pub fn emit(stream: Stream, label: &str, line: &str, prefix: bool, colours: Colours) {
    let text = if prefix {
        let colour = if stream == Stream::Stdout { "36" } else { "31" };
        format!("{}{line}\n", paint(&format!("{label}: "), colour, colours.on(stream)))
    } else {
        format!("{line}\n")
    };
    let _ = match stream {
        Stream::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
        Stream::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
    };
}

/// The `Output` a command's streams get in `mode`: the line events carry
/// what live and JSON modes show, so only the deferred modes capture.
pub fn sink(mode: Mode) -> Output {
    match mode {
        Mode::Gather | Mode::ByHost { .. } => Output::capture(),
        Mode::Live { .. } | Mode::Json => Output::null(),
    }
}
