//! The crate graph that docs/architecture.md states is the real one: every workspace
//! package's normal dependencies on other workspace packages, from `cargo metadata`,
//! equal the block the document gives.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// `package: dep dep …` lines of the fenced block after the sentence naming this test.
fn documented(doc: &str) -> BTreeMap<String, Vec<String>> {
    let start = doc
        .find("experiments/tests/crate_graph.rs")
        .expect("docs/architecture.md names this test above its crate-graph block");
    let block = &doc[start..];
    let open = block.find("```text\n").expect("a ```text block follows") + "```text\n".len();
    let close = block[open..].find("```").expect("the block is closed") + open;
    block[open..close]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (name, deps) = line.split_once(':').expect("`package: deps` lines");
            let mut deps: Vec<String> = deps.split_whitespace().map(str::to_owned).collect();
            deps.sort();
            (name.trim().to_owned(), deps)
        })
        .collect()
}

/// The same from `cargo metadata` (normal dependencies only, workspace packages only).
fn actual(root: &Path) -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    packages
        .iter()
        .map(|p| {
            let mut deps: Vec<String> = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|n| names.contains(n))
                .map(str::to_owned)
                .collect();
            deps.sort();
            deps.dedup();
            (p["name"].as_str().expect("name").to_owned(), deps)
        })
        .collect()
}

#[test]
fn the_documented_crate_graph_is_the_real_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).expect("the doc");
    assert_eq!(
        documented(&doc),
        actual(&root),
        "docs/architecture.md's crate graph (left) differs from the Cargo.toml files (right)"
    );
}
