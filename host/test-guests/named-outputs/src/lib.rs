//! Adds named outputs (`data.output`): its input is a count; it adds that
//! many named outputs of 1 KiB each, then tries names the host must refuse
//! (the main output's own, a path, a hidden file, none, one given twice).
//! Its output is the refusals, one a line. Kept apart from `hostile`,
//! which browser tabs run: tabs take no job that adds named outputs.

use agora_guest::prelude::*;

struct NamedOutputs;

impl Job for NamedOutputs {
    fn run(input: Input) -> Result<Output> {
        let text = String::from_utf8(input.bytes()?).map_err(|_| Error::msg("not UTF-8"))?;
        let count: u64 = text.trim().parse().map_err(|_| Error::msg("the input is a count"))?;
        let mut refused = Vec::new();
        for i in 0..count {
            if let Err(e) = Output::from(vec![i as u8; 1024]).named(&format!("o{i}")) {
                refused.push(e.to_string());
            }
        }
        for bad in ["out", "png", "../x", ".x", "", "o0"] {
            if let Err(e) = Output::from(b"x".to_vec()).named(bad) {
                refused.push(e.to_string());
            }
        }
        Ok(refused.join("\n").into_bytes().into())
    }
}

agora_guest::export_job!(NamedOutputs);
