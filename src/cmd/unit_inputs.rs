//! The ways `agora submit` makes a job's units: explicit files, every file
//! of a folder or glob, the pieces of one large file, and the combinations
//! of a parameter sweep. Pure: what each unit's input is, not how it is
//! sent.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// Where one unit's input comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitSource {
    /// A whole file.
    File(PathBuf),
    /// The bytes `range` of a file.
    Piece(PathBuf, std::ops::Range<u64>),
    /// Bytes made here (a sweep's parameters, as JSON).
    Made(Vec<u8>),
}

/// The files of `set`: a folder's files (not its subfolders), sorted, or
/// the files a glob pattern matches, sorted. One that matches nothing is
/// an error (a typo would otherwise make an empty job).
pub fn files_of(set: &str) -> Result<Vec<PathBuf>> {
    let path = Path::new(set);
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .with_context(|| format!("reading the folder {set}"))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("reading the folder {set}"))?
    } else {
        glob::glob(set)
            .with_context(|| format!("the pattern {set}"))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("matching {set}"))?
    };
    files.retain(|f| f.is_file());
    files.sort();
    if files.is_empty() {
        bail!("{set} names no file (a folder's files, or a glob pattern such as 'data/*.png')");
    }
    Ok(files)
}

/// The pieces of `size` bytes of `file` (the last may be shorter).
pub fn pieces_of(file: &Path, size: u64) -> Result<Vec<UnitSource>> {
    if size == 0 {
        bail!("a piece size is at least one byte");
    }
    let len = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    Ok((0..len.div_ceil(size))
        .map(|i| UnitSource::Piece(file.to_path_buf(), i * size..((i + 1) * size).min(len)))
        .collect())
}

/// The combinations of `--sweep KEY=V1,V2` arguments, the last key varying
/// fastest: each a JSON object of its values (a number where the value
/// reads as one, a string otherwise).
pub fn sweep(axes: &[String]) -> Result<Vec<Vec<u8>>> {
    let mut parsed: Vec<(String, Vec<serde_json::Value>)> = Vec::new();
    for axis in axes {
        let (key, values) = axis
            .split_once('=')
            .with_context(|| format!("--sweep {axis}: expected KEY=V1,V2,..."))?;
        let key = key.trim();
        if key.is_empty() || parsed.iter().any(|(k, _)| k == key) {
            bail!("--sweep {axis}: each sweep names a key of its own");
        }
        let values: Vec<serde_json::Value> =
            values.split(',').map(|v| value_of(v.trim())).collect();
        if values.iter().any(|v| v.as_str() == Some("")) {
            bail!("--sweep {axis}: an empty value");
        }
        parsed.push((key.to_string(), values));
    }
    let mut combinations = vec![serde_json::Map::new()];
    for (key, values) in &parsed {
        combinations = combinations
            .into_iter()
            .flat_map(|done| {
                values.iter().map(move |v| {
                    let mut next = done.clone();
                    next.insert(key.clone(), v.clone());
                    next
                })
            })
            .collect();
    }
    if parsed.is_empty() {
        return Ok(Vec::new());
    }
    Ok(combinations
        .into_iter()
        .map(|c| serde_json::to_vec(&serde_json::Value::Object(c)).expect("plain JSON"))
        .collect())
}

fn value_of(text: &str) -> serde_json::Value {
    if let Ok(n) = text.parse::<i64>() {
        return n.into();
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => {
            serde_json::Number::from_f64(x).map_or_else(|| text.into(), serde_json::Value::Number)
        }
        _ => text.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_the_product_of_its_axes() {
        let units = sweep(&[
            "lr=0.1,0.01".into(),
            "hidden=64,128".into(),
            "act=relu".into(),
        ])
        .unwrap();
        let texts: Vec<String> = units
            .iter()
            .map(|u| String::from_utf8(u.clone()).unwrap())
            .collect();
        assert_eq!(
            texts,
            [
                r#"{"act":"relu","hidden":64,"lr":0.1}"#,
                r#"{"act":"relu","hidden":128,"lr":0.1}"#,
                r#"{"act":"relu","hidden":64,"lr":0.01}"#,
                r#"{"act":"relu","hidden":128,"lr":0.01}"#,
            ]
        );
        assert!(sweep(&["lr".into()]).is_err());
        assert!(sweep(&["lr=1".into(), "lr=2".into()]).is_err());
        assert!(sweep(&["lr=1,,2".into()]).is_err());
        assert!(sweep(&[]).unwrap().is_empty());
    }

    #[test]
    fn folders_globs_and_pieces_list_their_units_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.txt", "a.txt", "c.bin"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let all = files_of(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(
            all.iter()
                .map(|f| f.file_name().unwrap().to_str().unwrap())
                .collect::<Vec<_>>(),
            ["a.txt", "b.txt", "c.bin"]
        );
        let txt = files_of(&format!("{}/*.txt", dir.path().display())).unwrap();
        assert_eq!(txt.len(), 2);
        assert!(files_of(&format!("{}/*.none", dir.path().display())).is_err());
        let pieces = pieces_of(&dir.path().join("c.bin"), 2).unwrap();
        assert_eq!(
            pieces.last(),
            Some(&UnitSource::Piece(dir.path().join("c.bin"), 4..5))
        );
        assert_eq!(pieces.len(), 3);
    }
}
