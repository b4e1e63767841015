//! The documents cite only names that exist. README.md, ARCHITECTURE.md, EXERCISES.md,
//! PROTOCOL.md, BENCHMARKS.md and the crate docs send a reader to files, functions, types,
//! flags and settings; when the code moves on and a name is gone, this test fails and says
//! which document cites which name.
//!
//! What counts as a citation:
//! - a path under `src/`, `tests/`, `scripts/`, `examples/` or `tools/`, anywhere in the text
//!   (code blocks included): the file or folder must exist;
//! - in inline code (`` `…` ``, outside code blocks):
//!   - a Rust file name (`broker/node.rs`): some Rust file's path must end in it;
//!   - a flag (`--bind`): it must occur as `"--bind"` in `src/cli/`;
//!   - an environment variable (`RUN_SECS`): it must occur in the code, `run_test.sh` or
//!     `scripts/`;
//!   - a name with an underscore (`run_worker`, `a_test_name`) or in CamelCase
//!     (`ClearWhenWritten`): it must occur in the code;
//!   - a path with `::`: for `Type::method`, one file must have both an `impl` naming the type
//!     and `fn method`; for `Type::Variant`, both names must occur in the code; for
//!     `module::name`, each module must exist and the name must be defined.
//!
//! A name on a line that also cites Rust files — "`src/broker/compute.rs`
//! (`ClearWhenWritten`)", a table row "`Node::admit`, `src/broker/node.rs`" — must be in one of
//! those files. "The code" is every `.rs` file of the workspace with its comments removed, so a
//! name kept alive only by a comment does not count. Paths into the standard library and the
//! dependencies (`io::ErrorKind`, `thread::park`) are not checked.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The documents checked.
const DOCS: &[&str] = &[
    "README.md",
    "ARCHITECTURE.md",
    "EXERCISES.md",
    "PROTOCOL.md",
    "BENCHMARKS.md",
    "src/lib.rs",
    "tools/src/lib.rs",
];

/// Where the Rust sources are.
const SOURCE_DIRS: &[&str] = &["src", "tests", "examples", "tools/src", "tools/tests"];

/// A path in the text starting with one of these is a cited file or folder.
const PATH_ROOTS: &[&str] = &["src/", "tests/", "scripts/", "examples/", "tools/"];

/// The first segment of a `::` path outside this workspace: the standard library and the
/// dependencies.
const EXTERNAL: &[&str] = &[
    "std",
    "core",
    "io",
    "fmt",
    "net",
    "thread",
    "time",
    "sync",
    "mpsc",
    "crossbeam_channel",
    "parking_lot",
    "rand",
    "log",
    "env_logger",
    "ctrlc",
    "hmac",
    "sha2",
    "proptest",
];

/// Names a document cites on purpose although the code has no such thing: `(document, name)`.
const ALLOWED: &[(&str, &str)] = &[
    // The house style's suggested layout, which the section says the code does not follow.
    ("ARCHITECTURE.md", "broker/replica.rs"),
    // Kernel functions in a CPU profile.
    ("BENCHMARKS.md", "finish_task_switch"),
    ("BENCHMARKS.md", "_raw_spin_unlock_irqrestore"),
    ("BENCHMARKS.md", "epoll_wait"),
];

/// Names a document still cites although they are gone, until its text is fixed (issue 12,
/// item 7): `(document, name)`. An entry the document no longer cites fails the test, so the
/// list only shrinks.
const KNOWN_STALE: &[(&str, &str)] = &[];

#[test]
fn every_name_the_docs_cite_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let code = Code::read(root);
    let mut missing = Vec::new();
    let mut excused = HashSet::new();
    for doc in DOCS {
        let text = fs::read_to_string(root.join(doc)).unwrap_or_else(|e| panic!("{doc}: {e}"));
        let text = if doc.ends_with(".rs") {
            crate_docs(&text)
        } else {
            text
        };
        for problem in check(&text, root, &code) {
            let entry = (*doc, problem.name.as_str());
            if ALLOWED.contains(&entry) || KNOWN_STALE.contains(&entry) {
                excused.insert((doc.to_string(), problem.name));
            } else {
                missing.push(format!("{doc}: `{}` ({})", problem.name, problem.why));
            }
        }
    }
    for (doc, name) in ALLOWED.iter().chain(KNOWN_STALE) {
        if !excused.contains(&(doc.to_string(), name.to_string())) {
            missing.push(format!(
                "{doc}: `{name}` is excused in tests/docs.rs but no longer cited: remove it there"
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "{} problem(s) with the names the docs cite:\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}

#[test]
fn the_check_finds_each_kind_of_missing_name() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let code = Code::read(root);
    let text = "Read `src/broker/nowhere.rs` and `gone.rs`, then `Node::no_such_method`,
`broker::no_such_module`, `no_such_function`, `NoSuchType`, `--no-such-flag`, `NO_SUCH_VAR`.
In `src/broker/compute.rs` (`Broker::start`), `run_worker` and `Node::admit`.

```sh
scripts/no_such_script.sh
```

These exist: `Broker::start`, `broker::node`, `Error::Usage`, `cli::run`, `run_test.sh`,
`--bind`, `RUN_SECS`, `io::ErrorKind`, `ClearWhenWritten`, `wait_until`.
In `src/broker/path.rs` and `path.rs`: `Node::admit`.";
    let found: Vec<String> = check(text, root, &code)
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(
        found,
        [
            "src/broker/nowhere.rs",
            "scripts/no_such_script.sh",
            "gone.rs",
            "Node::no_such_method",
            "broker::no_such_module",
            "no_such_function",
            "NoSuchType",
            "--no-such-flag",
            "NO_SUCH_VAR",
            // Both exist, but not in the file the line cites.
            "Broker::start",
            "Node::admit",
        ]
    );
}

/// A cited name that does not exist, and what was looked for.
#[derive(Debug)]
struct Problem {
    name: String,
    why: &'static str,
}

/// Every problem with the names `text` cites: paths first, then inline code line by line.
fn check(text: &str, root: &Path, code: &Code) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut report = |name: &str, why| {
        problems.push(Problem {
            name: name.to_string(),
            why,
        })
    };
    for path in cited_paths(text) {
        if !root.join(&path).exists() {
            report(&path, "no such file or folder");
        }
    }
    for line in prose(text).lines() {
        let spans = inline_code(line);
        let cited: Vec<&str> = spans.iter().copied().filter(|s| is_rust_file(s)).collect();
        let scope = code.scope(&cited);
        for span in spans {
            if span.starts_with("--") {
                for flag in span.split_whitespace().filter(|w| w.starts_with("--")) {
                    if !code.cli.contains(&format!("\"{flag}\"")) {
                        report(flag, "no such flag in src/cli/");
                    }
                }
                continue;
            }
            if PATH_ROOTS.iter().any(|r| span.starts_with(r)) {
                continue; // a path, checked above
            }
            if is_rust_file(span) {
                if !code.has_file_ending_in(span) {
                    report(span, "no Rust file of that name");
                }
                continue;
            }
            let Some(name) = identifier(span) else {
                continue;
            };
            let segments: Vec<&str> = name.split("::").collect();
            let problem = match segments.as_slice() {
                [one] if is_env_var(one) => (!code.everywhere().has_word(one)
                    && !code.scripts_have(one))
                .then_some("not in the code, run_test.sh or scripts/"),
                [one] if one.contains('_') || is_camel_case(one) => {
                    (!scope.has_word(one)).then_some(scope.not_found())
                }
                [] | [_] => None,
                [first, ..] if EXTERNAL.contains(first) => None,
                [modules @ .., owner, last] => code.path_problem(&scope, modules, owner, last),
            };
            if let Some(why) = problem {
                report(name, why);
            }
        }
    }
    problems
}

/// The `//!` lines of a Rust file, without their markers.
fn crate_docs(source: &str) -> String {
    source
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text without its fenced code blocks (a Rust or shell example is not a citation of
/// names, except for the paths [`cited_paths`] finds in it).
fn prose(text: &str) -> String {
    let mut in_block = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
        } else if !in_block {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The contents of every inline code span on a line, trimmed: a run of backticks up to the
/// next run of the same length (so `` `x` `` holds a backtick).
fn inline_code(line: &str) -> Vec<&str> {
    let ticks_at = |s: &str| s.len() - s.trim_start_matches('`').len();
    let mut spans = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        let ticks = ticks_at(&rest[start..]);
        let after = &rest[start + ticks..];
        let mut from = 0;
        let close = loop {
            let Some(i) = after[from..].find('`') else {
                break None;
            };
            let run = ticks_at(&after[from + i..]);
            if run == ticks {
                break Some(from + i);
            }
            from += i + run;
        };
        match close {
            Some(end) => {
                spans.push(after[..end].trim());
                rest = &after[end + ticks..];
            }
            None => break,
        }
    }
    spans
}

/// Every path under one of [`PATH_ROOTS`] in `text`, without trailing punctuation.
fn cited_paths(text: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_./-".contains(c);
    let mut paths = Vec::new();
    for (i, _) in text.char_indices() {
        if text[..i].chars().next_back().is_some_and(is_path_char) {
            continue;
        }
        let rest = &text[i..];
        if PATH_ROOTS.iter().any(|r| rest.starts_with(r)) {
            let end = rest.find(|c| !is_path_char(c)).unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches(['.', ',', ':', ';']);
            paths.push(path.to_string());
        }
    }
    paths
}

/// `broker/node.rs`, `node.rs`: path characters only, ending in `.rs`.
fn is_rust_file(s: &str) -> bool {
    s.ends_with(".rs")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./".contains(c))
}

/// The Rust name in an inline code span — `name`, `a::b::c`, with an optional argument list
/// (`Safety::wait(.., bool)`) — or `None` if the span is something else.
fn identifier(span: &str) -> Option<&str> {
    let name = match span.find('(') {
        Some(i) if span.ends_with(')') => &span[..i],
        _ => span,
    };
    let is_ident = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    name.split("::").all(is_ident).then_some(name)
}

/// `RUST_LOG`, `RUN_SECS`: capitals and digits with an underscore.
fn is_env_var(s: &str) -> bool {
    s.contains('_')
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `ClearWhenWritten`, `Node`: a capital, then at least one lower-case letter, no underscore.
fn is_camel_case(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.contains(|c: char| c.is_ascii_lowercase())
        && !s.contains('_')
}

fn starts_lower(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// The workspace's Rust code with its comments removed, and its shell scripts.
struct Code {
    /// Each Rust file's path (relative to the root) and code.
    files: Vec<(String, String)>,
    /// Module names: file stems, folder names and `mod` declarations.
    modules: HashSet<String>,
    /// The files of `src/cli/`, where every flag is declared.
    cli: String,
    /// `run_test.sh` and `scripts/`, which read the environment variables.
    scripts: String,
}

impl Code {
    fn read(root: &Path) -> Code {
        let mut paths = Vec::new();
        for dir in SOURCE_DIRS {
            rust_files(&root.join(dir), &mut paths);
        }
        let mut scripts = fs::read_to_string(root.join("run_test.sh")).expect("read run_test.sh");
        for entry in fs::read_dir(root.join("scripts")).expect("list scripts/") {
            let path = entry.expect("list scripts/").path();
            scripts.push_str(&fs::read_to_string(path).expect("read a script"));
        }
        let mut code = Code {
            files: Vec::new(),
            modules: HashSet::new(),
            cli: read_folder(&root.join("src/cli")),
            scripts,
        };
        for path in paths {
            let relative = path.strip_prefix(root).expect("under the root");
            // This file names missing things on purpose, in its own test.
            if relative == Path::new("tests/docs.rs") {
                continue;
            }
            let text = without_comments(&fs::read_to_string(&path).expect("read a Rust file"));
            for part in relative {
                let part = part.to_string_lossy();
                code.modules
                    .insert(part.trim_end_matches(".rs").to_string());
            }
            for pair in words(&text).windows(2) {
                if pair[0] == "mod" {
                    code.modules.insert(pair[1].to_string());
                }
            }
            code.files
                .push((relative.to_string_lossy().into_owned(), text));
        }
        code
    }

    /// Every Rust file.
    fn everywhere(&self) -> Scope<'_> {
        self.scope(&[])
    }

    /// The files whose paths end in one of `cited`; every file if `cited` is empty.
    fn scope(&self, cited: &[&str]) -> Scope<'_> {
        let files = self
            .files
            .iter()
            .filter(|(path, _)| cited.is_empty() || cited.iter().any(|c| path_ends_in(path, c)))
            .map(|(_, text)| text.as_str())
            .collect();
        Scope {
            files,
            cited: !cited.is_empty(),
        }
    }

    fn scripts_have(&self, word: &str) -> bool {
        words(&self.scripts).contains(&word)
    }

    fn has_file_ending_in(&self, name: &str) -> bool {
        self.files.iter().any(|(path, _)| path_ends_in(path, name))
    }

    fn is_module(&self, name: &str) -> bool {
        self.modules.contains(name) || ["crate", "edgebroker", "edgebroker_tools"].contains(&name)
    }

    /// What is wrong with the path `modules::owner::last`, if anything.
    fn path_problem(
        &self,
        scope: &Scope<'_>,
        modules: &[&str],
        owner: &str,
        last: &str,
    ) -> Option<&'static str> {
        if !modules.iter().all(|m| self.is_module(m)) {
            return Some("no such module");
        }
        let everywhere = self.everywhere();
        if starts_lower(owner) {
            if !self.is_module(owner) {
                return Some("no such module");
            }
            let defined = if starts_lower(last) {
                self.is_module(last) || everywhere.defines_fn(last)
            } else {
                everywhere.has_word(last)
            };
            return (!defined).then_some("no such item in that module");
        }
        if starts_lower(last) {
            let found = scope
                .files
                .iter()
                .any(|text| defines_fn(text, last) && implements(text, owner));
            return (!found).then_some(if scope.cited {
                "no such method in the files cited beside it"
            } else {
                "no such method"
            });
        }
        (!(everywhere.has_word(owner) && scope.has_word(last))).then_some(scope.not_found())
    }
}

/// The files a name must be in: those its line cites, or all of them.
struct Scope<'a> {
    files: Vec<&'a str>,
    cited: bool,
}

impl Scope<'_> {
    fn has_word(&self, word: &str) -> bool {
        self.files.iter().any(|text| words(text).contains(&word))
    }

    fn defines_fn(&self, name: &str) -> bool {
        self.files.iter().any(|text| defines_fn(text, name))
    }

    fn not_found(&self) -> &'static str {
        if self.cited {
            "not in the files cited beside it"
        } else {
            "does not occur in the code"
        }
    }
}

/// Whether `path` is `name` or ends in `/name`.
fn path_ends_in(path: &str, name: &str) -> bool {
    path == name || path.ends_with(&format!("/{name}"))
}

/// Whether `text` defines `fn name`.
fn defines_fn(text: &str, name: &str) -> bool {
    words(text).windows(2).any(|pair| pair == ["fn", name])
}

/// Whether `text` has an `impl` (or a `trait`) naming `owner`.
fn implements(text: &str, owner: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start().trim_start_matches("pub ");
        (l.starts_with("impl") || l.starts_with("trait")) && words(l).contains(&owner)
    })
}

/// The identifiers in `text`, in order.
fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect()
}

/// `text` without its `//` comments, doc comments included (the project writes no `/* */`
/// comments). A `//` inside a string cuts the rest of that line too, which only makes the
/// check stricter.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| line.find("//").map_or(line, |i| &line[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The Rust files under `dir`, one after the other, in the order of their paths.
fn read_folder(dir: &Path) -> String {
    let mut paths = Vec::new();
    rust_files(dir, &mut paths);
    assert!(!paths.is_empty(), "no Rust files in {}", dir.display());
    paths.sort();
    paths
        .iter()
        .map(|path| fs::read_to_string(path).expect("read a Rust file"))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
