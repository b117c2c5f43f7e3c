//! The layers stay layers: every `crate::` path in a module of `src/` names a module below it in
//! the order that `src/lib.rs` states ("Layers, from the bottom: ..."), and README states the same
//! order. Test modules at the end of a file (`#[cfg(test)]`, `#[cfg(all(test, ...))]`), test
//! modules in a file of their own (`tests.rs`, declared that way) and comments (doc links
//! included) are not imports and are skipped.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

const ORDER_LINE: &str = "Layers, from the bottom: ";

/// The order stated in `text`: the modules after [`ORDER_LINE`], up to the full stop.
fn stated_order(text: &str) -> Vec<String> {
    let start = text.find(ORDER_LINE).expect("the layer order is stated") + ORDER_LINE.len();
    let rest = &text[start..];
    let end = rest.find('.').expect("the order ends with a full stop");
    rest[..end]
        .split(',')
        .map(|module| module.trim().to_string())
        .collect()
}

/// Source without comments, and without the test modules that end a file.
fn code_of(source: &str) -> String {
    let mut code = String::new();
    for line in source.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") || trimmed.starts_with("#[cfg(all(test") {
            break;
        }
        let line = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// The top-level modules that `code` names through `crate::` paths, also inside
/// `use crate::{a::X, b::Y}` groups.
fn named_modules(code: &str, modules: &[String]) -> Vec<String> {
    let mut named = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let head = item.trim().split("::").next().unwrap_or("").trim();
                named.push(head.to_string());
            }
        } else {
            let head: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            named.push(head);
        }
    }
    named.retain(|name| modules.contains(name));
    named
}

/// Every upward use in the sources given as (top-level module, code) pairs: (user, used).
fn upward_uses(sources: &[(String, String)], order: &[String]) -> Vec<(String, String)> {
    let rank = |module: &str| order.iter().position(|m| m == module);
    let mut found = Vec::new();
    for (module, code) in sources {
        let Some(mine) = rank(module) else {
            continue;
        };
        for used in named_modules(code, order) {
            if rank(&used).is_some_and(|theirs| theirs > mine) {
                found.push((module.clone(), used));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate's sources, by top-level module (lib.rs itself is the root, above every layer).
fn crate_sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|path| {
            let name = path.file_name().unwrap();
            name != "lib.rs" && name != "tests.rs"
        })
        .map(|path| {
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str();
            let module = first.to_str().unwrap().trim_end_matches(".rs").to_string();
            (module, code_of(&fs::read_to_string(&path).unwrap()))
        })
        .collect()
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let order = stated_order(&fs::read_to_string(root.join("src/lib.rs")).unwrap());
    let sources = crate_sources();
    let mut modules: Vec<&String> = sources.iter().map(|(module, _)| module).collect();
    modules.sort();
    modules.dedup();
    for module in modules {
        assert!(
            order.contains(module),
            "src/{module} is in no layer: add it to the order in src/lib.rs"
        );
    }
    let upward = upward_uses(&sources, &order);
    assert!(
        upward.is_empty(),
        "imports that run up the layers ({}): {upward:?}",
        order.join(" < ")
    );
}

#[test]
fn readme_states_the_same_order() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = stated_order(&fs::read_to_string(root.join("src/lib.rs")).unwrap());
    let readme = stated_order(&fs::read_to_string(root.join("README.md")).unwrap());
    assert_eq!(lib, readme);
}

/// The check itself: an upward `use`, a path in an expression and one inside a `use` group are
/// found; comments and test modules are not imports.
#[test]
fn the_check_finds_upward_imports() {
    let order: Vec<String> = ["abi", "tlb", "vmar"].map(String::from).to_vec();
    let source = |module: &str, text: &str| (module.to_string(), code_of(text));
    let sources = [
        source(
            "tlb",
            "use crate::abi::Status;\nuse crate::vmar::AddressSpace;\n",
        ),
        source("abi", "fn f() { crate::tlb::flush(); }\n"),
        source("abi", "use crate::{vmar::Vmar, abi::X};\n"),
        source("abi", "/// See [`crate::vmar::Vmar`].\n// crate::tlb\n"),
        source(
            "tlb",
            "fn g() {}\n#[cfg(test)]\nmod tests {\n    use crate::vmar::Vmar;\n}\n",
        ),
        source(
            "abi",
            "#[cfg(all(test, feature = \"sim\"))]\nmod tests { use crate::tlb::X; }\n",
        ),
    ];
    let found = upward_uses(&sources, &order);
    let expected: Vec<(String, String)> = [("abi", "tlb"), ("abi", "vmar"), ("tlb", "vmar")]
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .to_vec();
    assert_eq!(found, expected);
    let mut by_module = BTreeMap::new();
    for (module, code) in &sources {
        by_module
            .entry(module.clone())
            .or_insert_with(Vec::new)
            .extend(named_modules(code, &order));
    }
    assert_eq!(by_module["abi"], ["tlb", "vmar", "abi"]);
}

// ---------------------------------------------------------------------------------------------
// Sizes: no function in src/ over MAX_FN_LINES lines, no file over MAX_FILE_LINES.

/// The longest function allowed, in lines from its `fn` line to its closing brace.
const MAX_FN_LINES: usize = 80;
/// The longest file allowed (a module that grows past it is split by job).
const MAX_FILE_LINES: usize = 600;

/// The functions of `source` longer than `max` lines, as (first line, lines). A function starts
/// at a line whose code begins with `fn`, `pub fn`, `unsafe fn`, `const fn` (in any combination)
/// and ends where the braces opened from there close; a declaration without a body ends at `;`.
fn long_functions(source: &str, max: usize) -> Vec<(usize, usize)> {
    let lines: Vec<&str> = source
        .lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect();
    let mut long = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(fn_at) = words.iter().position(|w| *w == "fn") else {
            continue;
        };
        let qualifiers = &words[..fn_at];
        let is_start = qualifiers
            .iter()
            .all(|w| w.starts_with("pub") || matches!(*w, "unsafe" | "const" | "async"));
        if !is_start {
            continue;
        }
        let mut depth = 0i64;
        let mut opened = false;
        for (offset, body) in lines[start..].iter().enumerate() {
            for c in body.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            let ended = (opened && depth == 0) || (!opened && body.trim_end().ends_with(';'));
            if ended {
                if offset + 1 > max {
                    long.push((start + 1, offset + 1));
                }
                break;
            }
        }
    }
    long
}

#[test]
fn no_long_functions_or_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        let name = path.strip_prefix(&src).unwrap().display().to_string();
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            problems.push(format!("src/{name}: {lines} lines"));
        }
        for (line, length) in long_functions(&text, MAX_FN_LINES) {
            problems.push(format!("src/{name}:{line}: a function of {length} lines"));
        }
    }
    assert!(
        problems.is_empty(),
        "over {MAX_FILE_LINES} lines per file or {MAX_FN_LINES} per function: {problems:#?}"
    );
}

/// The size check itself: a long function is found (with its length), a short one, a
/// declaration without a body and a call named like a function are not.
#[test]
fn the_size_check_finds_long_functions() {
    let mut source = String::from("pub(crate) unsafe fn short() {\n    x();\n}\n");
    source.push_str("fn declared(&self);\nlet f = fn_like();\n");
    source.push_str("fn long(a: u8) -> u8 {\n");
    for _ in 0..80 {
        source.push_str("    if a > 0 { b(); }\n");
    }
    source.push_str("}\n");
    assert_eq!(long_functions(&source, 80), vec![(6, 82)]);
    assert_eq!(long_functions(&source, 82), vec![]);
}
