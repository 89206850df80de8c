//! The README's sample outputs are what the binary prints now. Each block after a
//! `<!-- sample -->` line starts with `$ gpt2-parity ARGS`; this test runs those arguments from
//! the repository root (stdout piped, as a reader's pipe or CI log sees it) and compares.
//! `scripts/readme-samples.sh` (UPDATE_README=1) rewrites the blocks from the binary instead.
//! Where the machine's vector code still rounds differently from the one that made the samples
//! (the pinned code paths below leave MKL's blocking to the CPU), a sample also stands when it
//! differs only in its figures and the token strings they point at: the wording, the columns and
//! the verdicts must be the same.
mod common;

use common::{gpt2_parity, repo_path};

const MARKER: &str = "<!-- sample -->";

/// Splits a command line on spaces, keeping "double-quoted" words whole.
fn words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => words.extend((!word.is_empty()).then(|| std::mem::take(&mut word))),
            _ => word.push(c),
        }
    }
    words.extend((!word.is_empty()).then_some(word));
    words
}

/// The command's stdout, on one libtorch thread (OMP_NUM_THREADS lowers the default, every core)
/// and on the AVX2 code paths of MKL and of libtorch's own kernels: the samples' last digits then
/// depend neither on the machine's cores nor on its vector width (an AVX-512 machine's products
/// round differently in the last bits).
fn output_of(command: &str) -> String {
    let args = words(command.strip_prefix("$ gpt2-parity ").expect("a sample starts with `$ gpt2-parity `"));
    let output = gpt2_parity()
        .current_dir(repo_path(""))
        .env("OMP_NUM_THREADS", "1")
        .env("MKL_CBWR", "AVX2")
        .env("ATEN_CPU_CAPABILITY", "avx2")
        .args(&args)
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap()
}

/// `text` with every figure, every quoted string (a token, a prompt) and every run of spaces or
/// rule characters made one: what stays is the wording, the layout's order and the verdicts.
fn without_figures(text: &str) -> String {
    let (mut kept, mut quoted) = (String::new(), false);
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
            if quoted {
                kept.push('"');
            }
            continue;
        }
        if quoted {
            continue;
        }
        let c = if c.is_ascii_digit() { '0' } else { c };
        if !(matches!(c, '0' | '─' | '═' | ' ') && kept.ends_with(c)) {
            kept.push(c);
        }
    }
    kept
}

#[test]
fn the_readme_samples_are_what_the_binary_prints() {
    let path = repo_path("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = readme.lines().collect();
    let (mut rewritten, mut samples, mut stale) = (Vec::new(), 0, Vec::new());
    let mut index = 0;
    while index < lines.len() {
        rewritten.push(lines[index].to_owned());
        if lines[index] != MARKER {
            index += 1;
            continue;
        }
        assert_eq!(lines[index + 1], "```", "a sample block follows {MARKER}");
        let command = lines[index + 2];
        let end = index + 3 + lines[index + 3..].iter().position(|line| *line == "```").expect("the block ends");
        let shown = lines[index + 3..end].join("\n");
        let printed = output_of(command);
        let printed_trimmed = printed.trim_end_matches('\n');
        if shown != printed_trimmed && without_figures(&shown) != without_figures(printed_trimmed) {
            stale.push(command.to_owned());
        }
        rewritten.extend(["```".to_owned(), command.to_owned(), printed.trim_end_matches('\n').to_owned(), "```".to_owned()]);
        samples += 1;
        index = end + 1;
    }
    assert!(samples >= 2, "the README shows samples");
    if std::env::var_os("UPDATE_README").is_some() {
        std::fs::write(&path, rewritten.join("\n") + "\n").unwrap();
    } else {
        assert!(stale.is_empty(), "README samples differ from the binary's output; run scripts/readme-samples.sh: {stale:?}");
    }
}
