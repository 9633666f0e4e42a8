//! One module per subcommand (group).

pub mod client;
pub mod data;
pub mod host;
pub mod jobs;
pub mod keys;
pub mod ledger;
pub mod market;
pub mod registry;
pub mod run;
pub mod unit_inputs;

/// Text from others (providers' log lines and messages, publishers'
/// descriptions) as this program prints it: control characters (escape
/// sequences, carriage returns, new lines) and the invisible format
/// characters that reorder or hide text (bidirectional overrides, zero
/// widths, line separators) become `?`, so nobody moves the cursor,
/// recolours the terminal or forges a line of this program's own.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\t')
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
    };
    match text.chars().any(unsafe_char) {
        true => text
            .chars()
            .map(|c| if unsafe_char(c) { '?' } else { c })
            .collect::<String>()
            .into(),
        false => text.into(),
    }
}

/// Where named output `name` goes beside a unit's main output at `main`:
/// its extension becomes the name (`unit-3.out` → `unit-3.model`). The
/// market refused names that are not plain (`is_output_name`); one that
/// would land on the main output itself is refused here.
pub fn named_output_path(main: &std::path::Path, name: &str) -> anyhow::Result<std::path::PathBuf> {
    anyhow::ensure!(
        agora_wire::limits::is_output_name(name),
        "a named output `{}` is not {}",
        printable(name),
        agora_wire::limits::OUTPUT_NAME_RULE
    );
    let path = main.with_extension(name);
    anyhow::ensure!(
        path != main,
        "the named output `{name}` would overwrite {}: name the output file otherwise",
        main.display()
    );
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_from_others_cannot_drive_the_terminal() {
        assert_eq!(super::printable("step 3\tok"), "step 3\tok");
        assert_eq!(
            super::printable("\x1b[2J\rjob j1 ended: Done\n\u{9b}31m"),
            "?[2J?job j1 ended: Done??31m"
        );
        assert_eq!(
            super::printable("paid \u{202E}001\u{202C} \u{200B}ok"),
            "paid ?001? ?ok"
        );
    }
}
