//! Usage errors on one line: clap's message without its synopsis and footer.

use clap::error::ErrorKind;

/// clap's message for `e` as one line, without the `error: ` prefix: what is wrong and the
/// argument it is about, e.g. `the following required arguments were not provided: --out <DIR>`.
/// clap spreads that over several lines (the argument on its own line, then tips, the usage
/// synopsis and a footer); the synopsis and footer are dropped, the rest is joined.
pub fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let mut line = String::new();
    for part in text.lines().map(str::trim) {
        if part.starts_with("Usage:") || part.starts_with("For more information") {
            break;
        }
        if part.is_empty() {
            continue;
        }
        if line.is_empty() {
            line.push_str(part.strip_prefix("error: ").unwrap_or(part));
        } else if part.starts_with("tip:") {
            line.push_str("; ");
            line.push_str(part);
        } else if line.ends_with(':') {
            line.push(' ');
            line.push_str(part);
        } else if e.kind() == ErrorKind::MissingRequiredArgument {
            // One missing argument per line: a list.
            line.push_str(", ");
            line.push_str(part);
        } else {
            line.push(' ');
            line.push_str(part);
        }
    }
    if line.is_empty() {
        "invalid usage".into()
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;
    use crate::cli::args::Cli;
    use clap::Parser;

    fn error(args: &str) -> String {
        let argv = std::iter::once("dbbackup").chain(args.split_whitespace());
        one_line(&Cli::try_parse_from(argv).unwrap_err())
    }

    #[test]
    fn names_the_missing_arguments() {
        // --out/--repo may come from the config file: that one is checked after it is read
        // (cli::location::new_backup), with the same wording.
        assert_eq!(
            error("backup single --out x"),
            "the following required arguments were not provided: <DBNAME>"
        );
        assert_eq!(
            error("list"),
            "the following required arguments were not provided: --repo <LOCATION>"
        );
    }

    #[test]
    fn keeps_tips_and_possible_values() {
        assert_eq!(
            error("backup single mydb --out x --chunk-sze 1"),
            "unexpected argument '--chunk-sze' found; tip: a similar argument exists: '--chunk-size'"
        );
        assert_eq!(
            error("backup single mydb --out x --format fast"),
            "invalid value 'fast' for '--format <FORMAT>' [possible values: auto, native, plain, custom]"
        );
    }
}
