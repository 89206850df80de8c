//! How numbers, tokens, places and prompts are written, the same in every format and in the
//! notes' sentences: one function per kind of figure.
use crate::schema::{Criterion, DiffLocation};

/// Compact scientific notation for differences ("NaN" when it cannot be computed).
pub fn sci(value: f64) -> String {
    format!("{value:.2e}")
}

/// A percentage with `decimals` places, never "-0.00%" (rounding a tiny negative share to zero
/// keeps no sign).
pub fn percent(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    let text =
        if text.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') { text.trim_start_matches('-').to_owned() } else { text };
    format!("{text}%")
}

/// "1 element", "8 elements".
pub fn count_of(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// "412x", "3.1x", "0.8x": a multiple of the envelope.
pub fn times(multiple: f64) -> String {
    match multiple {
        value if value.is_nan() || value.is_infinite() => "non-finite".to_owned(),
        value if value >= 100.0 => format!("{value:.0}x"),
        value if value >= 10.0 => format!("{value:.0}x"),
        value => format!("{value:.1}x"),
    }
}

/// A share (0..1) in whole percent, or what stands in when it could not be computed.
pub fn share(value: f64) -> String {
    if value.is_nan() {
        "n/a (non-finite)".to_owned()
    } else {
        percent(100.0 * value, 0)
    }
}

/// "raw" or "shift-free": how a criterion is named wherever a report names it.
pub fn criterion_label(criterion: Criterion) -> &'static str {
    match criterion {
        Criterion::Raw => "raw",
        Criterion::ShiftInvariant => "shift-free",
    }
}

/// "" for raw comparisons, " (shift-free)" for shift-invariant ones: after a comparison's name.
pub fn criterion_suffix(criterion: Criterion) -> String {
    match criterion {
        Criterion::Raw => String::new(),
        other => format!(" ({})", criterion_label(other)),
    }
}

/// "embeddings" for residual snapshot 0, then the block whose output snapshot l is: "h.{l-1}".
pub fn snapshot_name(index: usize) -> String {
    match index {
        0 => "embeddings".to_owned(),
        block => format!("h.{}", block - 1),
    }
}

/// "@3 " World"", "@3 #234 \x8c" for a byte fragment, "@3 all tokens" for a shifted position:
/// an element's place in a cell or a one-line message.
pub fn place(at: &DiffLocation, whole_position: bool) -> String {
    if whole_position {
        format!("@{} all tokens", at.position)
    } else {
        format!("@{} {}", at.position, token_label(at.token_id, &at.token))
    }
}

/// "position 3, token 1240 "ience"", or "position 3, every token (the whole position is
/// shifted)": the same place in a sentence.
pub fn place_in_words(at: &DiffLocation, whole_position: bool) -> String {
    if whole_position {
        format!("position {}, every token (the whole position is shifted)", at.position)
    } else {
        format!("position {}, token {}", at.position, token_with_id(at.token_id, &at.token))
    }
}

/// A vocabulary entry as a reader can recognise it in a report: its text quoted and cut to 10
/// characters, or for a byte fragment (shown as \xNN escapes by `token_text`) its id and bytes.
pub fn token_label(token_id: i64, token: &str) -> String {
    if token.contains("\\x") {
        return format!("#{token_id} {token}");
    }
    if token.chars().count() > 10 {
        format!("{:?}", format!("{}…", token.chars().take(9).collect::<String>()))
    } else {
        format!("{token:?}")
    }
}

/// A vocabulary entry with its id, for sentences: `1240 "ience"`, or `#234 \x8c` for a byte fragment.
pub fn token_with_id(token_id: i64, token: &str) -> String {
    let label = token_label(token_id, token);
    if label.starts_with('#') {
        label
    } else {
        format!("{token_id} {label}")
    }
}

/// Text fit for XML (and XHTML) content and attribute values. Control characters XML 1.0 cannot
/// hold at all are written as Rust escapes, so the document stays well-formed and says what was there.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push_str(&character.escape_unicode().to_string()),
            other => out.push(other),
        }
    }
    out
}
