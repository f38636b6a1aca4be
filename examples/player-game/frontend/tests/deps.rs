//! The front end links the grains' interfaces, never their implementations: `cargo tree` of
//! its normal dependencies holds `player-game-api` and no crate of the workspace that defines
//! a grain (`#[grain(` in its library source).

use std::path::Path;
use std::process::Command;

/// Whether the library source under `dir` defines a grain: a `#[grain(` line outside doc
/// comments and unit tests.
fn defines_grains(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            return defines_grains(&path);
        }
        let unit_tests = path.file_name().is_some_and(|n| n == "tests.rs");
        if unit_tests || path.extension().is_none_or(|e| e != "rs") {
            return false;
        }
        std::fs::read_to_string(&path).is_ok_and(|text| {
            text.lines()
                .any(|line| line.trim_start().starts_with("#[grain("))
        })
    })
}

#[test]
fn the_front_end_links_no_grain_implementation() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "player-game-frontend",
            "--locked",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        tree.lines().any(|l| l.starts_with("player-game-api ")),
        "the front end uses the interface crate: {tree}"
    );
    assert!(
        !tree.lines().any(|l| l.starts_with("example-player-game ")),
        "the front end links the example's grains: {tree}"
    );
    // Every crate of the workspace in the tree (a path dependency: `name vX (/path)`).
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(3)
        .expect("the workspace holds examples/player-game/frontend");
    let mut checked = 0;
    for line in tree.lines() {
        let Some((_, path)) = line.split_once(" (") else {
            continue;
        };
        let path = Path::new(path.trim_end_matches(" (*)").trim_end_matches(')'));
        if !path.starts_with(workspace) {
            continue;
        }
        checked += 1;
        assert!(
            !defines_grains(&path.join("src")),
            "{line} defines grains, and the front end links it"
        );
    }
    assert!(checked >= 2, "no workspace crate found in the tree: {tree}");
}
