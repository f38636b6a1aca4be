//! The silo core's layers, checked: each module names (`crate::<module>`, in `use` lines or
//! in paths) only modules of the layers below its own, so the modules cannot import each other
//! in a cycle again. A lower layer that must reach up does it through a small trait it owns
//! (`shared::Home`, `cluster::ClusterHost`, `metrics::Census`, `health::Standing`), which an upper layer
//! implements. `docs/ARCHITECTURE.md` draws the same layers.

use std::path::{Path, PathBuf};

/// From the bottom up. A module may use the modules of the layers listed before its own.
const LAYERS: &[&[&str]] = &[
    // The observer objects a process serves (a silo's clients, a cluster client, a test kit).
    &["observers"],
    // Vocabulary and pure logic: no part of a running silo.
    &[
        "config",
        "events",
        "filter",
        "request",
        "retry",
        "admission",
        "metrics",
        "health",
        "client",
        "memory",
        "otel",
    ],
    // Events to grains: calls subscribed grains through a client.
    &["subscriptions"],
    &["shared"],
    &["activation"],
    &["workers"],
    &["registry"],
    &["catalog"],
    &["cluster"],
    &["router"],
    &["invoker", "collector", "reminders"],
    &["silo"],
];

/// The modules that are the crate's map or this check, not layers.
const EXEMPT: &[&str] = &["lib", "layers"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the source directory reads") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`cluster/lease.rs` → `cluster`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("under src");
    let first = relative
        .components()
        .next()
        .expect("a file name")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// The crate modules `code` names: `crate::a::..`, `crate::{a, b::c}`.
fn named_modules(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        if preceded {
            continue; // `granary_crate::` or the like
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                out.push(ident(item.trim()));
            }
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Every `(importer, imported)` pair that breaks the layer order.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut broken = Vec::new();
    for file in files {
        let module = module_of(src, &file);
        if EXEMPT.contains(&module.as_str()) {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            broken.push(format!(
                "{}: module `{module}` is in no layer; add it to LAYERS",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("the file reads");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue; // docs may link anywhere
            }
            for named in named_modules(line) {
                if named == module {
                    continue;
                }
                match layer_of(&named) {
                    Some(layer) if layer < own => {}
                    Some(_) => broken.push(format!(
                        "{}:{}: `{module}` uses `crate::{named}`, which is not below it",
                        file.display(),
                        n + 1
                    )),
                    // A re-export of the crate root (`crate::Silo`), not a module.
                    None => {}
                }
            }
        }
    }
    broken
}

#[test]
fn modules_import_only_from_the_layers_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let broken = violations(&src);
    assert!(
        broken.is_empty(),
        "layer order broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_check_sees_imports_groups_and_paths() {
    assert_eq!(named_modules("use crate::router::Router;"), ["router"]);
    assert_eq!(
        named_modules("use crate::{catalog::Catalog, shared};"),
        ["catalog", "shared"]
    );
    assert_eq!(
        named_modules("let x = crate::metrics::Refusal::Key; granary_crate::x"),
        ["metrics"]
    );
    assert!(layer_of("router") > layer_of("catalog"));
    assert!(layer_of("activation") > layer_of("admission"));
}

#[test]
fn an_upward_import_is_reported() {
    let dir = std::env::temp_dir().join(format!("granary-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    std::fs::write(dir.join("catalog.rs"), "use crate::router::Router;\n").expect("writes");
    std::fs::write(dir.join("router.rs"), "use crate::catalog::Catalog;\n").expect("writes");
    let broken = violations(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(
        broken[0].contains("`catalog` uses `crate::router`"),
        "{broken:?}"
    );
}
