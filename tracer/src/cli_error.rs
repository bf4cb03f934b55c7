//! Clap's errors in at most two lines: the message with what it names (the
//! missing arguments, the possible values, a tip), then the usage.

/// `error` as pathtrace prints it, without a trailing newline: one line, or
/// two when clap shows a usage.
pub fn render(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let mut lines = text.lines().map(str::trim_end);
    let first = lines.next().unwrap_or("invalid arguments");
    let mut message = first.strip_prefix("error: ").unwrap_or(first).to_string();
    let mut details: Vec<&str> = Vec::new();
    let mut tips: Vec<&str> = Vec::new();
    let mut usage: Vec<&str> = Vec::new();
    let mut in_usage = false;
    for line in lines {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            in_usage = false;
        } else if let Some(u) = trimmed.strip_prefix("Usage: ") {
            in_usage = true;
            usage.push(u);
        } else if in_usage {
            usage.push(trimmed);
        } else if trimmed.starts_with("For more information") {
            // `--help` is known; the line would make three.
        } else if trimmed.starts_with("tip: ") {
            tips.push(trimmed);
        } else {
            details.push(trimmed);
        }
    }
    if !details.is_empty() {
        message.push(' ');
        message.push_str(&details.join(", "));
    }
    if !tips.is_empty() {
        message.push_str(&format!(" ({})", tips.join("; ")));
    }
    if !usage.is_empty() {
        message.push_str("\nusage: ");
        message.push_str(&usage.join(" | "));
    }
    message
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    fn rendered(args: &[&str]) -> String {
        let mut all = vec!["pathtrace"];
        all.extend(args);
        let e = crate::cli::Cli::try_parse_from(all).expect_err("a bad command line");
        super::render(&e)
    }

    #[test]
    fn what_clap_names_stays_in_two_lines() {
        let missing = rendered(&["completions"]);
        assert_eq!(
            missing,
            "the following required arguments were not provided: <SHELL>\n\
             usage: pathtrace completions <SHELL>"
        );
        let conflict = rendered(&["drops", "--top", "--count", "5"]);
        assert!(
            conflict.starts_with(
                "the argument '--top' cannot be used with '--count <N>'\nusage: pathtrace drops"
            ),
            "{conflict}"
        );
        let value = rendered(&["--tier", "magic"]);
        assert!(
            value.starts_with("invalid value 'magic' for '--tier <TIER>' [possible values: auto,"),
            "{value}"
        );
        assert_eq!(value.lines().count(), 1);
        let unknown = rendered(&["--srcc", "1"]);
        assert!(
            unknown.starts_with("unexpected argument '--srcc' found (tip: a similar argument exists: '--src')\nusage: "),
            "{unknown}"
        );
        // A word that is no subcommand is a filter expression now, refused
        // (or not) by the expression's own parser (tests/filter_expr.rs).
        assert!(crate::cli::Cli::try_parse_from(["pathtrace", "frobnicate"]).is_ok());
    }
}
