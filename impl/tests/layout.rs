//! The architecture's two rules, checked on the source (`docs/runtime.md`, "Rules"):
//! `runtime/` names no protocol, and nothing in `impl/` writes a field of an actor's state.
//!
//! The type system carries most of the second rule: the driver hands out the state only as
//! `&A::State` (`Driver::state`) and a node loop's `Host` only ever sees `&A::State`, so the
//! only way to change a state is a step of the actor. What the types cannot forbid is a copy
//! of a state changed by hand and fed back; these checks look for that in the code (unit
//! tests, which build states on purpose, comments, and the conformance replays, which
//! rebuild the checked model's system state, are left out).

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, with its code: comments and `#[cfg(test)]` modules dropped.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("readable source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("readable source");
                let code: String = text
                    .lines()
                    .take_while(|l| l.trim() != "#[cfg(test)]")
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                out.push((path, code));
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Where `code` assigns to a field reached through a value named `state` (`state.x = ..`,
/// `state.x.y += ..`): the shape of writing an actor's state by hand.
fn state_field_writes(code: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for line in code.lines() {
        let mut rest = line;
        while let Some(i) = rest.find("state.") {
            let before = rest[..i].chars().last();
            let after = &rest[i + "state.".len()..];
            let path_len = after
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(after.len());
            let tail = after[path_len..].trim_start();
            let assigns = (tail.starts_with('=') && !tail.starts_with("=="))
                || ["+=", "-=", "|=", "&="]
                    .iter()
                    .any(|op| tail.starts_with(op));
            let named_state = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            if assigns && named_state && path_len > 0 {
                hits.push(line.trim().to_string());
            }
            rest = &after[path_len..];
        }
    }
    hits
}

#[test]
fn the_generic_runtime_names_no_protocol() {
    let protocols = [
        "master_slave",
        "failover",
        "knowledge",
        "stage_sync",
        "MasterServer",
        "SlaveServer",
    ];
    let files = sources(&src().join("runtime"));
    assert!(files.len() >= 10, "the runtime's files are found");
    let mut found = Vec::new();
    for (path, code) in files {
        for p in protocols {
            if code.contains(p) {
                found.push(format!("{}: {p}", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "runtime/ names a protocol: {found:#?}");
}

#[test]
fn no_file_of_the_runtime_writes_an_actor_state() {
    let mut found = Vec::new();
    for (path, code) in sources(&src()) {
        // Conformance replays a recorded run into the checked model's system state (its
        // network of in-flight messages), as the checker does: it runs no actor.
        if path.ends_with("conformance.rs") {
            continue;
        }
        for hit in state_field_writes(&code) {
            found.push(format!("{}: {hit}", path.display()));
        }
        for forbidden in [".to_mut()", "state_mut", "&mut A::State"] {
            if code.contains(forbidden) {
                found.push(format!("{}: {forbidden}", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "impl/ writes actor state: {found:#?}");
}

#[test]
fn the_check_sees_a_write_by_hand() {
    let code = "let mut next = state.clone();\nnext.data = d;\nself.state.pull = None;\n";
    assert_eq!(state_field_writes(code), vec!["self.state.pull = None;"]);
    assert!(state_field_writes("if state.pull == None {}\nlet s = state.data.clone();").is_empty());
    assert_eq!(
        state_field_writes("st.state.data.counter += 1;"),
        vec!["st.state.data.counter += 1;"]
    );
}
