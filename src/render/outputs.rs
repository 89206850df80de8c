//! Where one report goes: its main rendering (stdout or `--output`) and the extra files (JUnit,
//! HTML, markdown, GitHub's job summary). Every path is checked before any model work, so a typo
//! costs milliseconds; every file is written whole or not at all.
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::render::{render, verdict_summary, Format, Html, Junit, Markdown, Render, View};
use crate::schema::Report;
use crate::sys::output::{check_writable, emit, parent_dir, write_atomically};

/// GitHub Actions sets this to a file whose markdown it shows on the run's summary page.
pub const STEP_SUMMARY_VARIABLE: &str = "GITHUB_STEP_SUMMARY";

/// A run's output options, resolved.
pub struct Destinations {
    pub format: Format,
    pub layout: Layout,
    /// The main report's file; `None` for stdout.
    pub output: Option<PathBuf>,
    pub extra: ExtraFiles,
}

/// How much of a multi-prompt report the table and markdown show (`--wide`, `--verbose`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Layout {
    pub wide: bool,
    pub verbose: bool,
}

/// Files written besides the report on stdout or --output.
#[derive(Debug, Clone, Default)]
pub struct ExtraFiles {
    pub junit: Option<PathBuf>,
    pub html: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
}

impl Destinations {
    /// Fails unless every file can be written and no two options name the same file.
    pub fn check(&self) -> Result<()> {
        let files = self.files();
        for (index, (option, path)) in files.iter().enumerate() {
            check_writable(path, option)?;
            if let Some((other, _)) = files[..index].iter().find(|(_, earlier)| same_file(earlier, path)) {
                bail!("{other} and {option} both name {}; give each output its own file", path.display());
            }
        }
        Ok(())
    }

    /// Renders the report in every requested form and writes each.
    pub fn write(&self, report: &Report) -> Result<()> {
        let extra = &self.extra;
        let file_view = View { wide: self.layout.wide, verbose: self.layout.verbose, ..View::default() };
        let markdown = (extra.markdown.is_some() || step_summary().is_some()).then(|| Markdown { view: file_view }.render(report));
        if let Some(path) = &extra.junit {
            write_atomically(path, Junit.render(report).as_bytes())?;
        }
        if let Some(path) = &extra.html {
            write_atomically(path, Html.render(report).as_bytes())?;
        }
        if let (Some(path), Some(markdown)) = (&extra.markdown, &markdown) {
            write_atomically(path, markdown.as_bytes())?;
        }
        if let (Some(path), Some(markdown)) = (step_summary(), &markdown) {
            append(&path, markdown)?;
        }
        let output = self.output.as_deref();
        emit(&render(report, self.format, View::for_output(self.layout.wide, self.layout.verbose, output)), output)?;
        // Only a table on stdout shows the verdict in a CI log; otherwise one line on stderr does.
        if self.output.is_some() || self.format != Format::Table {
            eprintln!("{}", verdict_summary(report, output));
        }
        Ok(())
    }

    fn files(&self) -> Vec<(&'static str, PathBuf)> {
        let extra = &self.extra;
        let step_summary = step_summary().map(|path| (STEP_SUMMARY_VARIABLE, path));
        [
            ("--output", self.output.clone()),
            ("--junit", extra.junit.clone()),
            ("--html", extra.html.clone()),
            ("--markdown", extra.markdown.clone()),
        ]
        .into_iter()
        .filter_map(|(option, path)| path.map(|path| (option, path)))
        .chain(step_summary)
        .collect()
    }
}

/// The job summary file, when GitHub Actions (or a test) names one.
fn step_summary() -> Option<PathBuf> {
    std::env::var_os(STEP_SUMMARY_VARIABLE).filter(|value| !value.is_empty()).map(PathBuf::from)
}

/// Appends in one write: the job summary collects every step's markdown. A file that does not
/// end a line gets a line break first, or the heading would join its last line (a table row).
fn append(path: &Path, content: &str) -> Result<()> {
    let fail = || format!("cannot append to {} ({STEP_SUMMARY_VARIABLE})", path.display());
    let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path).with_context(fail)?;
    let ends_a_line = match file.metadata().with_context(fail)?.len() {
        0 => true,
        length => {
            let mut last = [0u8];
            file.seek(SeekFrom::Start(length - 1)).and_then(|_| file.read_exact(&mut last)).with_context(fail)?;
            last[0] == b'\n'
        }
    };
    let separator = if ends_a_line { "" } else { "\n" };
    file.write_all(format!("{separator}{content}").as_bytes()).with_context(fail)
}

/// Two paths naming one file, also when only one of them exists yet or they are spelled differently.
fn same_file(a: &Path, b: &Path) -> bool {
    let resolve = |path: &Path| parent_dir(path).canonicalize().ok().zip(path.file_name()).map(|(dir, name)| dir.join(name));
    a == b || matches!((resolve(a), resolve(b)), (Some(a), Some(b)) if a == b)
}
