//! The configuration table (docs/configuration.md; the README links it) against
//! the real binary: `faces serve --help`
//! lists every flag with its environment variable and default, and the table must
//! list exactly those flags, each with the variable the help shows and (unless the
//! default depends on the machine) the same default. So a flag added to, renamed in
//! or removed from `Config` (crates/faces-service/src/config.rs) or `faces serve`
//! (crates/faces/src/main.rs) fails here until the table says so too.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

mod support;

/// One option of `faces serve --help`.
#[derive(Debug, Default)]
struct HelpFlag {
    env: Option<String>,
    default: Option<String>,
}

/// One row of the README's configuration table.
#[derive(Debug)]
struct Row {
    line: usize,
    flags: Vec<String>,
    envs: Vec<String>,
    default: String,
}

fn serve_help() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_faces"))
        .args(["serve", "--help"])
        .output()
        .expect("`faces serve --help` runs");
    assert!(
        output.status.success(),
        "`faces serve --help` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// `--name` at the start of `text`, if it is one.
fn flag_at(text: &str) -> Option<String> {
    let rest = text.strip_prefix("--")?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!name.is_empty()).then(|| format!("--{name}"))
}

/// The text inside `[key: …]` in `line`, if present (`[env: FACES_PORT=]`, `[default: 8282]`).
fn bracket<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("[{key}: "))? + key.len() + 3;
    let end = start + line[start..].find(']')?;
    Some(&line[start..end])
}

/// Every `--flag` of the help with its `[env: …]` and `[default: …]`. Option lines
/// start (after indentation) with `-x, --flag` or `--flag`; the lines below one, up
/// to the next, are its description.
fn parse_help(help: &str) -> BTreeMap<String, HelpFlag> {
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        let option = if trimmed.starts_with("--") {
            flag_at(trimmed)
        } else if trimmed.len() > 4 && trimmed.starts_with('-') && trimmed[2..].starts_with(", ") {
            flag_at(&trimmed[4..])
        } else {
            None
        };
        if let Some(flag) = option {
            flags.insert(flag.clone(), HelpFlag::default());
            current = Some(flag);
        }
        let Some(flag) = current.as_ref() else {
            continue;
        };
        let entry = flags.get_mut(flag).expect("inserted above");
        if let Some(env) = bracket(line, "env") {
            // `NAME=value` normally, bare `NAME` where values are hidden.
            let name = env.split('=').next().unwrap_or_default().trim();
            entry.env = Some(name.to_owned());
        }
        if let Some(default) = bracket(line, "default") {
            entry.default = Some(default.trim().to_owned());
        }
    }
    flags.remove("--help");
    flags
}

/// The `backticked` spans of a table cell.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// Words of `cell` that look like environment variables (`FACES_PORT`, `ORT_DYLIB_PATH`).
fn env_names(cell: &str) -> Vec<String> {
    code_spans(cell)
        .into_iter()
        .filter(|span| {
            span.len() > 2
                && span
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

/// The rows of the first table under `## Configuration` in the README.
fn configuration_table(readme: &str) -> Vec<Row> {
    let lines: Vec<&str> = readme.lines().collect();
    let heading = lines
        .iter()
        .position(|line| line.trim() == "## Configuration")
        .expect("the README has a `## Configuration` section");
    let start = (heading + 1..lines.len())
        .find(|&i| lines[i].trim_start().starts_with('|'))
        .expect("a table under `## Configuration`");
    let mut rows = Vec::new();
    // Skip the header and the `|---|` line.
    for (i, line) in lines.iter().enumerate().skip(start + 2) {
        let line = line.trim();
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert!(
            cells.len() >= 4,
            "README line {}: a configuration row needs 4 cells (flag | env | default | meaning): {line}",
            i + 1
        );
        rows.push(Row {
            line: i + 1,
            flags: code_spans(cells[0])
                .into_iter()
                .filter_map(flag_at)
                .collect(),
            envs: env_names(cells[1]),
            default: cells[2].to_owned(),
        });
    }
    assert!(!rows.is_empty(), "the configuration table has no rows");
    rows
}

fn readme() -> String {
    let path = support::repo_file("docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn the_configuration_table_lists_exactly_the_flags_of_faces_serve() {
    let help = parse_help(&serve_help());
    assert!(
        help.len() > 20 && help.contains_key("--port"),
        "could not read the flags of `faces serve --help` (found {:?})",
        help.keys().collect::<Vec<_>>()
    );
    let rows = configuration_table(&readme());

    let listed: BTreeSet<&str> = rows
        .iter()
        .flat_map(|row| row.flags.iter().map(String::as_str))
        .collect();
    let shown: BTreeSet<&str> = help.keys().map(String::as_str).collect();
    let missing: Vec<String> = shown
        .difference(&listed)
        .map(|flag| match &help[*flag].env {
            Some(env) => format!("{flag} (env {env})"),
            None => (*flag).to_owned(),
        })
        .collect();
    let extra: Vec<&&str> = listed.difference(&shown).collect();
    let mut duplicated: Vec<&str> = Vec::new();
    let mut seen = BTreeSet::new();
    for flag in rows.iter().flat_map(|row| row.flags.iter()) {
        if !seen.insert(flag.as_str()) {
            duplicated.push(flag);
        }
    }

    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "flags of `faces serve --help` missing from the README's configuration table \
             (add a row each, from crates/faces-service/src/config.rs or crates/faces/src/main.rs): {}",
            missing.join(", ")
        ));
    }
    if !extra.is_empty() {
        problems.push(format!(
            "flags in the README's configuration table that `faces serve --help` does not have \
             (renamed or removed?): {extra:?}"
        ));
    }
    if !duplicated.is_empty() {
        problems.push(format!("flags listed twice in the table: {duplicated:?}"));
    }

    let all_envs: BTreeSet<&str> = rows
        .iter()
        .flat_map(|row| row.envs.iter().map(String::as_str))
        .collect();
    for (flag, shown) in &help {
        let Some(env) = &shown.env else { continue };
        if !all_envs.contains(env.as_str()) {
            problems.push(format!(
                "environment variable {env} (of {flag}) is not in the table"
            ));
        }
    }

    for row in &rows {
        for flag in &row.flags {
            let Some(shown) = help.get(flag) else {
                continue;
            };
            if let Some(env) = &shown.env {
                if !row.envs.contains(env) {
                    problems.push(format!(
                        "README line {}: {flag} is read from {env}, but its row says {:?}",
                        row.line, row.envs
                    ));
                }
            }
            // Defaults that depend on the machine (the CPU count) are written in words.
            if let Some(default) = &shown.default {
                let words = row.default.contains("CPU");
                let written = code_spans(&row.default).contains(&default.as_str());
                if !words && !written {
                    problems.push(format!(
                        "README line {}: {flag} defaults to `{default}`, but its row says {:?}",
                        row.line, row.default
                    ));
                }
            }
        }
    }

    assert!(
        problems.is_empty(),
        "the README's configuration table has drifted from `faces serve --help`:\n  - {}",
        problems.join("\n  - ")
    );
}

#[test]
fn the_help_parser_reads_flags_envs_and_defaults() {
    let help = "Options:\n      --port <PORT>\n          Port [env: FACES_PORT=] [default: 8282]\n      \
                --api-key <API_KEYS>\n          Keys, e.g. `--port` [env: FACES_API_KEYS]\n      \
                --s3-prefix <S3_PREFIX>\n          Prefix [env: FACES_S3_PREFIX=] [default: \"\"]\n  \
                -h, --help\n          Print help\n";
    let flags = parse_help(help);
    assert_eq!(
        flags.keys().collect::<Vec<_>>(),
        ["--api-key", "--port", "--s3-prefix"]
    );
    assert_eq!(flags["--port"].env.as_deref(), Some("FACES_PORT"));
    assert_eq!(flags["--port"].default.as_deref(), Some("8282"));
    assert_eq!(flags["--api-key"].env.as_deref(), Some("FACES_API_KEYS"));
    assert_eq!(flags["--api-key"].default, None);
    assert_eq!(flags["--s3-prefix"].default.as_deref(), Some("\"\""));
}
