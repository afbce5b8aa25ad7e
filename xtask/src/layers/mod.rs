//! `cargo xtask layers` (also part of the lint tier): the agent's top-level modules form one
//! stack, and a module may import only modules below it. Import cycles between them cannot
//! happen then, and each layer can be read, tested and replaced without the ones above.
//!
//! The order is [`ORDER`]; `docs/architecture.md` states the same list, and the check fails when
//! the two differ, so the document cannot drift from what is enforced. Every `crate::` path in
//! `agent/src/**/*.rs` counts, in `use` declarations and in code alike ([`scan`]); comments and
//! strings do not. The crate roots (`lib.rs`, `main.rs`) are exempt: they only declare modules.
pub mod scan;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// The agent's top-level modules, bottom to top.
pub const ORDER: [&str; 18] = [
    "config",
    "clock",
    "supervise",
    "resources",
    "node",
    "cri",
    "cgroup",
    "ebpf",
    "logs",
    "pod",
    "event",
    "probe",
    "reconcile",
    "status",
    "stats",
    "server",
    "cluster",
    "daemon",
];

/// `cargo xtask layers` options.
#[derive(clap::Args, Debug)]
pub struct LayersArgs {
    /// Check this tree (holding `agent/src` and `docs/architecture.md`) instead of the workspace,
    /// e.g. a scratch copy with a deliberate violation.
    #[arg(long)]
    pub root: Option<PathBuf>,
}

/// Runs the check on `--root`, or on the workspace.
pub fn cli(args: &LayersArgs) -> Result<()> {
    check(&args.root.clone().unwrap_or_else(crate::workspace_root))
}

/// The line of `docs/architecture.md` that states the order; the rest of it is the list.
pub const DOC_MARKER: &str = "layers, bottom to top:";

/// One `crate::` path that breaks the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub file: PathBuf,
    pub line: usize,
    /// The source line, trimmed.
    pub text: String,
    pub from: String,
    pub to: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = if ORDER.contains(&self.to.as_str()) {
            format!(
                "{} may import only modules below it, and {} is above",
                self.from, self.to
            )
        } else {
            format!("{} is not a module of the layer order", self.to)
        };
        write!(
            f,
            "{}:{}: `{}` imports {}: {rule}",
            self.file.display(),
            self.line,
            self.text,
            self.to
        )
    }
}

/// Runs the check on the workspace at `root`; the error lists every violation.
pub fn check(root: &Path) -> Result<()> {
    let src = root.join("agent/src");
    let doc = root.join("docs/architecture.md");
    let doc_text =
        std::fs::read_to_string(&doc).with_context(|| format!("reading {}", doc.display()))?;
    let documented = documented_order(&doc_text)
        .with_context(|| format!("{}: no line starting with {DOC_MARKER:?}", doc.display()))?;
    if documented != ORDER {
        bail!(
            "{} lists the layers as {} but the check enforces {}; make them the same",
            doc.display(),
            documented.join(" < "),
            ORDER.join(" < ")
        );
    }
    let lib = std::fs::read_to_string(src.join("lib.rs")).context("reading agent/src/lib.rs")?;
    let declared = declared_modules(&lib);
    let ordered: BTreeSet<String> = ORDER.iter().map(|m| (*m).to_owned()).collect();
    if declared != ordered {
        bail!(
            "agent/src/lib.rs declares the modules {declared:?}, the layer order has {ordered:?}; \
             place every module in the order (xtask/src/layers/mod.rs and docs/architecture.md)"
        );
    }
    let mut files = Vec::new();
    collect_rs(&src, &mut files)?;
    files.sort();
    let mut sources = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        sources.push((relative, text));
    }
    let report = violations(&sources);
    if report.is_empty() {
        println!(
            "layers: ok ({} files; {})",
            sources.len(),
            ORDER.join(" < ")
        );
        return Ok(());
    }
    let mut lines: Vec<String> = report.iter().map(ToString::to_string).collect();
    for cycle in cycles(&report_edges(&sources)) {
        lines.push(format!("cycle: {}", cycle.join(" -> ")));
    }
    let message = lines.join("\n");
    bail!(
        "{message}\n{} import(s) against the layer order ({}, bottom to top)",
        report.len(),
        ORDER.join(" < ")
    )
}

/// The order stated in the architecture document.
#[must_use]
pub fn documented_order(doc: &str) -> Option<Vec<String>> {
    let line = doc
        .lines()
        .find_map(|l| l.trim().strip_prefix(DOC_MARKER))?;
    Some(
        line.split('<')
            .map(|m| m.trim().trim_matches('`').to_owned())
            .collect(),
    )
}

/// The `mod` / `pub mod` names declared in the crate root.
fn declared_modules(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub mod ")
                .or(line.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').trim().to_owned())
        })
        .collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_rs(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The top-level module a file under `agent/src` belongs to; `None` for the crate roots.
fn owner(relative: &Path) -> Option<String> {
    let inside = relative.strip_prefix("agent/src").unwrap_or(relative);
    let first = inside.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_owned()),
    }
}

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|m| *m == module)
}

/// Every reference in `sources` (path relative to the workspace, text) against the order.
#[must_use]
pub fn violations(sources: &[(PathBuf, String)]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (path, text) in sources {
        let Some(from) = owner(path) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        for reference in scan::references(text) {
            if reference.module == from {
                continue;
            }
            let allowed = match (rank(&from), rank(&reference.module)) {
                (Some(own), Some(other)) => other < own,
                _ => false,
            };
            if !allowed {
                out.push(Violation {
                    file: path.clone(),
                    line: reference.line,
                    text: lines
                        .get(reference.line - 1)
                        .map_or_else(String::new, |l| l.trim().to_owned()),
                    from: from.clone(),
                    to: reference.module,
                });
            }
        }
    }
    out
}

/// The module graph: which top-level modules each one names.
fn report_edges(sources: &[(PathBuf, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in sources {
        let Some(from) = owner(path) else {
            continue;
        };
        for reference in scan::references(text) {
            if reference.module != from {
                edges
                    .entry(from.clone())
                    .or_default()
                    .insert(reference.module);
            }
        }
    }
    edges
}

/// The import cycles of `edges`, each once, as `a -> b -> a`.
#[must_use]
pub fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn walk(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<Vec<String>>,
        out: &mut Vec<Vec<String>>,
    ) {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle: Vec<String> = path[start..].to_vec();
            // One spelling per cycle: rotated to start at its smallest module.
            let smallest = (0..cycle.len()).min_by_key(|&i| &cycle[i]).unwrap_or(0);
            cycle.rotate_left(smallest);
            if seen.insert(cycle.clone()) {
                let first = cycle[0].clone();
                cycle.push(first);
                out.push(cycle);
            }
            return;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            walk(next, edges, path, seen, out);
        }
        path.pop();
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for node in edges.keys() {
        walk(node, edges, &mut Vec::new(), &mut seen, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(path: &str, text: &str) -> (PathBuf, String) {
        (PathBuf::from(path), text.to_owned())
    }

    #[test]
    fn downward_imports_pass() {
        let sources = [
            source(
                "agent/src/cgroup/manager.rs",
                "use crate::resources::{Amounts, get_pod_qos};\nuse crate::config::KubeletConfig;\n",
            ),
            source(
                "agent/src/daemon.rs",
                "use crate::{\n    server::{self, Providers},\n    stats::store::StatsStore,\n};\n",
            ),
            source("agent/src/lib.rs", "pub mod cgroup;\n"),
            source("agent/src/stats/mod.rs", "use crate::stats::model::X;\n"),
        ];
        assert_eq!(violations(&sources), []);
    }

    #[test]
    fn an_upward_import_fails_naming_file_line_and_rule() {
        let sources = [source(
            "agent/src/resources/qos.rs",
            "use std::fmt;\n\nuse crate::{\n    config::Quantity,\n    status::PodsProvider,\n};\n",
        )];
        let found = violations(&sources);
        assert_eq!(found.len(), 1, "{found:?}");
        let message = found[0].to_string();
        assert_eq!(
            message,
            "agent/src/resources/qos.rs:5: `status::PodsProvider,` imports status: resources may \
             import only modules below it, and status is above"
        );
    }

    #[test]
    fn paths_in_code_and_unknown_modules_fail() {
        let sources = [source(
            "agent/src/node.rs",
            "fn f() -> u64 {\n    crate::daemon::run();\n    crate::nowhere::x()\n}\n",
        )];
        let found = violations(&sources);
        let modules: Vec<&str> = found.iter().map(|v| v.to.as_str()).collect();
        assert_eq!(modules, ["daemon", "nowhere"]);
        assert_eq!(found[0].line, 2);
        assert!(
            found[1]
                .to_string()
                .contains("not a module of the layer order")
        );
    }

    #[test]
    fn cycles_are_reported_once() {
        let sources = [
            source("agent/src/cgroup/a.rs", "use crate::reconcile::x;"),
            source("agent/src/reconcile/b.rs", "use crate::cgroup::y;"),
            source("agent/src/stats/c.rs", "use crate::server::z;"),
            source("agent/src/server/d.rs", "use crate::stats::w;"),
        ];
        assert_eq!(violations(&sources).len(), 2);
        let found = cycles(&report_edges(&sources));
        assert_eq!(
            found,
            [
                vec!["cgroup", "reconcile", "cgroup"],
                vec!["server", "stats", "server"]
            ]
        );
    }

    #[test]
    fn the_document_states_the_enforced_order() {
        let doc = crate::workspace_root().join("docs/architecture.md");
        let text = std::fs::read_to_string(&doc).expect("docs/architecture.md");
        assert_eq!(documented_order(&text).expect("the order line"), ORDER);
    }

    #[test]
    fn the_crate_root_declares_exactly_the_ordered_modules() {
        let lib = crate::workspace_root().join("agent/src/lib.rs");
        let declared = declared_modules(&std::fs::read_to_string(lib).expect("lib.rs"));
        let ordered: BTreeSet<String> = ORDER.iter().map(|m| (*m).to_owned()).collect();
        assert_eq!(declared, ordered);
    }
}
