//! The table of settings (crates/agent/src/config/table.rs) is the one spelling of the
//! configuration: the README's configuration table must list exactly its variables, with its
//! defaults, and every variable and JSON key the Python package reads or sends must be in it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use vllm_profiler::config_table::{known_json_keys, SETTINGS};

/// Variables the Python package reads that are no setting of the profiler: where the package
/// finds the library (README, "Python package").
const NOT_SETTINGS: &[&str] = &["VLLM_PROFILER_LIBRARY"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `(variable, default)` of every row of the README's table under `## Configuration`.
fn readme_rows(readme: &str) -> Vec<(String, String)> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Configuration\n"))
        .expect("README.md has a `## Configuration` section");
    section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and its rule
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            assert!(cells.len() >= 4, "a row with three cells: {line}");
            let var = cells[1].trim_matches('`').to_owned();
            (var, cells[2].to_owned())
        })
        .collect()
}

#[test]
fn the_readme_table_lists_every_setting_with_its_default() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let rows = readme_rows(&readme);
    let mut problems = Vec::new();
    for setting in SETTINGS {
        match rows.iter().find(|(var, _)| var == setting.env) {
            None => problems.push(format!("{} has no row in README.md", setting.env)),
            Some((_, default)) if default != setting.readme_default => problems.push(format!(
                "{}: README.md says the default is {default:?}, the table {:?}",
                setting.env, setting.readme_default
            )),
            Some(_) => {}
        }
    }
    for (var, _) in &rows {
        if !SETTINGS.iter().any(|s| s.env == var) {
            problems.push(format!("README.md lists {var}, which the table lacks"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The Python package's sources, by file name.
fn python_sources() -> Vec<(String, String)> {
    let dir = repo().join("python/vllm_profiler");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "py"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// Every quoted `VLLM_*` name (a string literal's start: prose in docstrings is not quoted).
fn quoted_variables(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in source.match_indices("VLLM_") {
        if !matches!(source[..at].chars().last(), Some('"' | '\'')) {
            continue;
        }
        let name: String = source[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        found.insert(name);
    }
    found
}

/// The `"key":` entries of the bracketed text that opens right after each `anchor`.
fn dict_keys_after(source: &str, anchor: &str, keys: &mut BTreeSet<String>) {
    for (at, _) in source.match_indices(anchor) {
        let rest = &source[at + anchor.len()..];
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' | '{' | '[' => depth += 1,
                    ')' | '}' | ']' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let body = &rest[..end];
        for piece in body.split('"').collect::<Vec<_>>().windows(2) {
            if piece[1].trim_start().starts_with(':') && is_key(piece[0]) {
                keys.insert(piece[0].to_owned());
            }
        }
    }
}

fn is_key(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// The JSON keys the package gives `vllm_profiler_enable`: those of the dicts it passes to
/// `_native.enable(...)` or builds as `config`, and every `config["key"]`.
fn json_keys(source: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    dict_keys_after(source, "_native.enable(", &mut keys);
    dict_keys_after(source, "config: Dict[str, Any] = {", &mut keys);
    for (at, _) in source.match_indices("config[\"") {
        let key: String = source[at + 8..].chars().take_while(|&c| c != '"').collect();
        if is_key(&key) {
            keys.insert(key);
        }
    }
    keys
}

#[test]
fn every_variable_and_key_the_python_package_uses_is_in_the_table() {
    let known: BTreeSet<&str> = known_json_keys().collect();
    let mut problems = Vec::new();
    let (mut all_vars, mut all_keys) = (BTreeSet::new(), BTreeSet::new());
    for (file, source) in python_sources() {
        for var in quoted_variables(&source) {
            let in_table = SETTINGS.iter().any(|s| s.env == var);
            if !in_table && !NOT_SETTINGS.contains(&var.as_str()) {
                problems.push(format!(
                    "python/vllm_profiler/{file} reads {var}, not in the table"
                ));
            }
            all_vars.insert(var);
        }
        for key in json_keys(&source) {
            if !known.contains(key.as_str()) {
                problems.push(format!(
                    "python/vllm_profiler/{file} sends {key:?}, not in the table"
                ));
            }
            all_keys.insert(key);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The scans still see what the package is known to use (a scan that finds nothing passes
    // nothing).
    for var in [
        "VLLM_ENABLE_PROFILING",
        "VLLM_ENABLE_LAYER_PROFILING",
        "VLLM_PROFILING_RECORD_SHAPES",
    ] {
        assert!(
            all_vars.contains(var),
            "the scan missed {var}: {all_vars:?}"
        );
    }
    for key in [
        "enable_gpu_monitoring",
        "auto_export_interval",
        "max_history",
        "output_dir",
    ] {
        assert!(
            all_keys.contains(key),
            "the scan missed {key}: {all_keys:?}"
        );
    }
}

#[test]
fn the_scans_see_what_they_are_meant_to() {
    let source = r#"
x = os.environ.get("VLLM_PROFILING_NEW")  # noqa
"""Docs mention VLLM_PROFILING_PROSE."""
_native.enable({"colour": 1, "sample_interval": float(s)})
config: Dict[str, Any] = {
    "shade": bool(x),
}
config["tint"] = 2
"#;
    assert_eq!(
        quoted_variables(source),
        BTreeSet::from(["VLLM_PROFILING_NEW".into()])
    );
    let keys: Vec<String> = json_keys(source).into_iter().collect();
    assert_eq!(keys, ["colour", "sample_interval", "shade", "tint"]);
    let rows = readme_rows(
        "# x\n\n## Configuration\n\n| v | d | m |\n|---|---|---|\n| `A` | on | a |\n\nafter\n",
    );
    assert_eq!(rows, [("A".to_owned(), "on".to_owned())]);
}
