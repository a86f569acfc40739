//! Every example in the docs gives the outcome the docs claim: each `replicore-check ...`
//! line of a fenced code block in `README.md` or `docs/*.md` that ends in `# exit N` is run,
//! and must exit N. An example that names no exit code is not a claim and is not run; one
//! that does is a promise this test keeps.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// (file, line number, arguments, expected exit code) of every claimed example.
fn examples() -> Vec<(String, usize, Vec<String>, i32)> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable doc");
        let mut fenced = false;
        for (n, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.starts_with("```") {
                fenced = !fenced;
                continue;
            }
            let Some(rest) = t.strip_prefix("replicore-check ") else {
                continue;
            };
            if !fenced {
                continue;
            }
            let Some((command, comment)) = rest.split_once('#') else {
                continue;
            };
            let Some(code) = comment
                .split_whitespace()
                .skip_while(|w| *w != "exit")
                .nth(1)
                .and_then(|c| c.trim_matches(|ch: char| !ch.is_ascii_digit()).parse().ok())
            else {
                continue;
            };
            let args = command.split_whitespace().map(str::to_string).collect();
            out.push((
                file.file_name().unwrap().to_string_lossy().into_owned(),
                n + 1,
                args,
                code,
            ));
        }
    }
    out
}

#[test]
fn every_documented_example_exits_as_the_docs_say() {
    let examples = examples();
    assert!(
        examples.len() >= 6,
        "the docs' examples were not found: {examples:?}"
    );
    let mut wrong = Vec::new();
    for (file, line, args, code) in &examples {
        let out = Command::cargo_bin("replicore-check")
            .expect("the binary is built")
            .args(args)
            .output()
            .expect("it runs");
        let got = out.status.code().unwrap_or(-1);
        if got != *code {
            // The end of its error output says why (a panic's message, an error's line).
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            wrong.push(format!(
                "{file}:{line}: replicore-check {} exited {got}, the docs say {code}\n{}",
                args.join(" "),
                tail.join("\n")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
