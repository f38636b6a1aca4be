//! Tidy checks of the source tree (after rust-analyzer's): every Rust file opens with a `//!`
//! doc, no `todo!`/`dbg!` debris is left, `docs/ARCHITECTURE.md` names every crate, and every
//! code name it writes in backticks exists in the source; the README's test command is the
//! `./test` script that `.ci/run` runs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// Every file and folder below `dir` (folders included), but build output and hidden ones.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "target" || name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            out.push(path.clone());
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The files below the source folders (`crates/`, `examples/`, `tests/`) whose name ends with
/// one of `extensions`.
fn files_of(extensions: &[&str]) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for dir in ["crates", "examples", "tests"] {
        walk(&workspace().join(dir), &mut all);
    }
    all.retain(|f| {
        f.is_file()
            && f.extension()
                .is_some_and(|e| extensions.iter().any(|x| e == *x))
    });
    all
}

fn sources() -> Vec<PathBuf> {
    let mut files = files_of(&["rs"]);
    // trybuild cases are compiler input, not project modules.
    files.retain(|f| !f.components().any(|c| c.as_os_str() == "ui"));
    assert!(files.len() > 20, "the walk found the sources");
    files
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let missing: Vec<_> = sources()
        .into_iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! doc: {missing:?}"
    );
}

#[test]
fn no_debris_is_left() {
    let needles = [
        concat!("todo", "!("),
        concat!("dbg", "!("),
        concat!("unimplemented", "!("),
    ];
    let mut found = Vec::new();
    for file in sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        for needle in needles {
            if text.contains(needle) {
                found.push(format!("{}: {needle}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn architecture_names_every_crate() {
    let doc = std::fs::read_to_string(workspace().join("docs/ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    for dir in ["crates", "examples"] {
        for entry in std::fs::read_dir(workspace().join(dir)).unwrap() {
            let manifest =
                std::fs::read_to_string(entry.unwrap().path().join("Cargo.toml")).unwrap();
            let name = manifest
                .lines()
                .find_map(|l| {
                    l.strip_prefix("name = \"")
                        .and_then(|l| l.strip_suffix('"'))
                })
                .expect("every package has a name")
                .to_owned();
            if !doc.contains(&format!("`{name}`")) {
                missing.push(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "crates missing from docs/ARCHITECTURE.md: {missing:?}"
    );
}

/// Words in `docs/ARCHITECTURE.md`'s code spans that are not names of this workspace's code, and
/// why each may stay. Keep it tiny: a stale name of our own code is fixed in the doc instead.
const NOT_OUR_NAMES: &[(&str, &str)] = &[(
    "AtomicResponse",
    "actix's type: the decision \"tokio tasks, not actix actors\" names what actix forbids",
)];

/// The code spans of a Markdown text (a span may wrap lines); fenced blocks are skipped.
fn code_spans(doc: &str) -> Vec<String> {
    let mut text = String::new();
    let mut fenced = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|span| span.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The names of `doc`'s code spans that the sources do not have, each as "`name` in `span`":
/// every identifier of a span (`Cluster::route` is `Cluster` and `route`; `#[grain]` is
/// `grain`; numbers are skipped) must be a word of the sources, `NAME_*` the start of one, and
/// a relative file or folder path (`cluster/lease.rs`, `tests/`) the end of one of `paths`.
fn missing_names(doc: &str, words: &HashSet<String>, paths: &[String]) -> Vec<String> {
    let allowed: HashSet<&str> = NOT_OUR_NAMES.iter().map(|(word, _)| *word).collect();
    let mut missing = Vec::new();
    for span in code_spans(doc) {
        let is_path = span.contains('/')
            && !span.starts_with('/')
            && span
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
        if is_path {
            let path = span.trim_end_matches('/');
            if !paths
                .iter()
                .any(|p| p == path || p.ends_with(&format!("/{path}")))
            {
                missing.push(format!("`{span}` (no such file or folder)"));
            }
        }
        let mut rest = span.as_str();
        while let Some(start) = rest.find(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            let tail = &rest[start..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let (word, after) = tail.split_at(end);
            rest = after;
            if word.starts_with(|c: char| c.is_ascii_digit()) || allowed.contains(word) {
                continue;
            }
            let found = if after.starts_with('*') {
                words.iter().any(|w| w.starts_with(word))
            } else {
                words.contains(word)
            };
            if !found && word == span {
                missing.push(format!("`{word}`"));
            } else if !found {
                missing.push(format!("`{word}` in `{span}`"));
            }
        }
    }
    missing.dedup();
    missing
}

#[test]
fn the_name_check_finds_stale_names_and_passes_current_ones() {
    let words: HashSet<String> = [
        "Cluster",
        "cluster",
        "route",
        "grain",
        "GRANARY_ROUTES",
        "lease",
        "rs",
    ]
    .map(String::from)
    .into();
    let paths = ["crates/granary-silo/src/cluster/lease.rs".to_owned()];
    let current = "`Cluster::route`, `#[grain]`, `GRANARY_*`, `GRANARY_ROUTES`, `cluster/lease.rs`, \
                   `=2.0.1`, `AtomicResponse`\n```\n`Unchecked` in a fence\n```\n";
    assert_eq!(missing_names(current, &words, &paths), Vec::<String>::new());
    let stale = "`RunToCompletion`; `Cluster::remote_target` wraps\nlines: `Cluster::\nroute_to`; \
                 `GRANARY_NOPE_*`; `cluster/gone.rs`";
    assert_eq!(
        missing_names(stale, &words, &paths),
        [
            "`RunToCompletion`",
            "`remote_target` in `Cluster::remote_target`",
            "`route_to` in `Cluster:: route_to`",
            "`GRANARY_NOPE_` in `GRANARY_NOPE_*`",
            "`cluster/gone.rs` (no such file or folder)",
            "`gone` in `cluster/gone.rs`",
        ]
    );
}

#[test]
fn architecture_names_only_code_that_exists() {
    let doc = std::fs::read_to_string(workspace().join("docs/ARCHITECTURE.md")).unwrap();
    // The sources' words: code, manifests and the crates' own docs; not this file, whose
    // examples of stale names would hide them.
    let this_file = Path::new(file!())
        .strip_prefix("tests")
        .unwrap_or(Path::new(file!()));
    let mut words = HashSet::new();
    for file in files_of(&["rs", "toml", "md"]) {
        if file.ends_with(this_file) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        words.extend(
            text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
                .map(str::to_owned),
        );
    }
    let mut paths = Vec::new();
    for dir in ["crates", "examples", "tests", "docs"] {
        paths.push(workspace().join(dir));
        walk(&workspace().join(dir), &mut paths);
    }
    let paths: Vec<String> = paths
        .iter()
        .map(|p| {
            p.strip_prefix(workspace())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let missing = missing_names(&doc, &words, &paths);
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md names code the sources (crates/, examples/, tests/) do not have: \
         {}.\nWrite today's name of that code in ARCHITECTURE.md, or drop it if the code is gone. \
         A word that is not a name of this workspace's code (another project's type) goes into \
         NOT_OUR_NAMES in tests/cluster/tidy.rs, with the reason.",
        missing.join(", ")
    );
}

#[test]
fn the_readme_test_command_is_the_script_ci_runs_and_it_runs_the_whole_suite() {
    let read = |path: &str| std::fs::read_to_string(workspace().join(path)).unwrap();
    let (readme, script, ci) = (read("README.md"), read("test"), read(".ci/run"));
    assert!(
        readme.lines().any(|l| l.starts_with("./test ")),
        "the README's quick start names `./test` as the test command"
    );
    for command in [
        "cargo nextest run --workspace --locked",
        "cargo test --workspace --doc --locked",
    ] {
        assert!(
            script.lines().any(|l| l.trim_start().starts_with(command)),
            "./test runs `{command}`"
        );
    }
    assert!(
        ci.lines().any(|l| l.starts_with("./test 2>&1 | tee")),
        ".ci/run runs the tests through ./test (and reads its summary)"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(workspace().join("test"))
            .unwrap()
            .permissions()
            .mode();
        assert_ne!(mode & 0o111, 0, "./test is executable");
    }
}
