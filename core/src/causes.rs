//! An error with its chain of causes as one line, each cause said once.
//!
//! Driver errors often repeat their cause in their own message (mysql_async's `Io` error
//! displays its inner `Io` error, which displays the `std::io::Error`, and each is also the
//! next `source()`), so walking the chain naively prints "Input/output error: Input/output
//! error: Connection refused (os error 111): … (os error 111)".

/// `e` and its sources joined with ": ", leaving out a cause whose text the message already
/// holds and collapsing a segment repeated back to back.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut texts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(inner) = source {
        texts.push(inner.to_string());
        source = inner.source();
    }
    join_causes(&texts)
}

/// The texts of an error and its causes, outermost first, as one line.
pub fn join_causes(texts: &[String]) -> String {
    // Innermost first: an outer text that already contains what was gathered replaces it;
    // otherwise it goes in front.
    let mut line = String::new();
    for text in texts.iter().rev().map(|t| t.trim()) {
        if text.is_empty() || line.contains(text) {
            continue;
        }
        line = if line.is_empty() || text.contains(line.as_str()) {
            text.to_string()
        } else {
            format!("{text}: {line}")
        };
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in line.split(": ") {
        if segments.last() != Some(&segment) {
            segments.push(segment);
        }
    }
    segments.join(": ")
}

#[cfg(test)]
mod tests {
    use super::join_causes;

    fn join(texts: &[&str]) -> String {
        join_causes(&texts.iter().map(|t| t.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn each_cause_once() {
        let refused = "Connection refused (os error 111)";
        assert_eq!(
            join(&[
                "Input/output error: Input/output error: Connection refused (os error 111)",
                "Input/output error: Connection refused (os error 111)",
                refused,
            ]),
            "Input/output error: Connection refused (os error 111)"
        );
        assert_eq!(
            join(&["error connecting to server", refused]),
            "error connecting to server: Connection refused (os error 111)"
        );
        assert_eq!(
            join(&[
                "error connecting to server: Connection refused (os error 111)",
                refused
            ]),
            "error connecting to server: Connection refused (os error 111)"
        );
        assert_eq!(join(&["a", "b", "c"]), "a: b: c");
        assert_eq!(join(&["timed out"]), "timed out");
    }
}
