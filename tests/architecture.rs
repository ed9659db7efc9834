//! The library's top-level modules (those `src/lib.rs` declares) depend on one another without a cycle, so that
//! each can be read, tested and changed from the bottom up: `model` says what the network is, `exec` runs it,
//! `train` trains it, and none of them reaches back to what is built on it.
//!
//! A module depends on another when its code names it: `crate::other::…`, a `use crate::{other, …}` group, or
//! a name the crate root re-exports from it (`crate::MobileNetV3` is `exec`'s). Comments, string literals and
//! code under a test-only `cfg` (test modules, `#[cfg(test)] mod x;` files) do not count: tests may reach up to
//! build what they test with. The binary's `src/cli/` and `src/main.rs` are not the library's.
//!
//! Run with `--nocapture` to see the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// module -> module it names -> where: file -> lines.
type Graph = BTreeMap<String, BTreeMap<String, Places>>;
type Places = BTreeMap<String, BTreeSet<usize>>;

#[test]
fn the_top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    println!("{}", describe(&graph));
    let cycles = cycles(&graph);
    if !cycles.is_empty() {
        let mut report = String::new();
        for group in &cycles {
            report.push_str(&format!("\nthese modules depend on each other: {}\n", group.join(", ")));
            if let Some(cycle) = one_cycle(&graph, group) {
                report.push_str(&format!("  for instance {}\n", cycle.join(" -> ")));
            }
            for from in group {
                for (to, places) in &graph[from] {
                    if group.contains(to) {
                        report.push_str(&format!("  {from} -> {to}: {}\n", show(places)));
                    }
                }
            }
        }
        panic!("the library's top-level modules form a dependency cycle:{report}");
    }
}

/// The graph of the library under `src`: every module `lib.rs` declares, with the files that make it up.
fn module_graph(src: &Path) -> Graph {
    let lib = tokens(&read(&src.join("lib.rs")));
    let modules: BTreeSet<String> = child_modules(&lib).into_iter().collect();
    assert!(modules.len() > 3, "src/lib.rs declares too few modules to be read right: {modules:?}");
    let reexports = root_reexports(&lib, &modules);
    let mut graph = Graph::new();
    for module in &modules {
        let edges = graph.entry(module.clone()).or_default();
        for file in module_files(src, module) {
            let shown = file.strip_prefix(src.parent().unwrap()).unwrap_or(&file).display().to_string();
            for (name, line) in crate_refs(&tokens(&read(&file))) {
                let target = if modules.contains(&name) { Some(&name) } else { reexports.get(&name) };
                if let Some(target) = target.filter(|t| *t != module) {
                    edges.entry(target.clone()).or_default().entry(shown.clone()).or_default().insert(line);
                }
            }
        }
    }
    graph
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The files of top-level module `name`: its root file and, following its (non-test) `mod x;` declarations, the
/// files of its submodules.
fn module_files(src: &Path, name: &str) -> Vec<PathBuf> {
    let root =
        resolve(src, name).unwrap_or_else(|| panic!("module {name} has neither src/{name}.rs nor src/{name}/mod.rs"));
    let mut files = Vec::new();
    let mut todo = vec![root];
    while let Some(file) = todo.pop() {
        let toks = tokens(&read(&file));
        // The folder of this file's submodules: beside a mod.rs, else in a folder named after the file.
        let dir = if file.file_name().is_some_and(|n| n == "mod.rs") {
            file.parent().unwrap().to_path_buf()
        } else {
            file.with_extension("")
        };
        for child in child_modules(&toks) {
            todo.push(resolve(&dir, &child).unwrap_or_else(|| panic!("{}: mod {child}; has no file", file.display())));
        }
        files.push(file);
    }
    files.sort();
    files
}

fn resolve(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(format!("{name}.rs")), dir.join(name).join("mod.rs")].into_iter().find(|p| p.is_file())
}

/// A token of source text with comments and literals blanked out, and the line it is on.
#[derive(Clone, Debug)]
struct Tok {
    text: String,
    line: usize,
}

/// The tokens of `source` that count: identifiers (and numbers), `::`, and single punctuation characters, with
/// comments, string and character literals gone, and every item under a test-only `cfg` removed.
fn tokens(source: &str) -> Vec<Tok> {
    let code = blank_comments_and_literals(source);
    let chars: Vec<char> = code.chars().collect();
    let mut toks = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok { text: chars[start..i].iter().collect(), line });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            toks.push(Tok { text: "::".into(), line });
            i += 2;
        } else {
            toks.push(Tok { text: c.to_string(), line });
            i += 1;
        }
    }
    remove_test_items(toks)
}

/// `source` with comments (nested block comments too), string literals (raw and byte ones too) and character
/// literals replaced by spaces; newlines are kept, so lines keep their numbers.
fn blank_comments_and_literals(source: &str) -> String {
    let s: Vec<char> = source.chars().collect();
    let mut out = s.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut out[from..to.min(s.len())] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < s.len() {
        let at = |k: usize| s.get(k).copied().unwrap_or('\0');
        if at(i) == '/' && at(i + 1) == '/' {
            let end = (i..s.len()).find(|&k| s[k] == '\n').unwrap_or(s.len());
            blank(&mut out, i, end);
            i = end;
        } else if at(i) == '/' && at(i + 1) == '*' {
            let (mut depth, mut k) = (0, i);
            while k < s.len() {
                if at(k) == '/' && at(k + 1) == '*' {
                    depth += 1;
                    k += 2;
                } else if at(k) == '*' && at(k + 1) == '/' {
                    depth -= 1;
                    k += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    k += 1;
                }
            }
            blank(&mut out, i, k);
            i = k;
        } else if (at(i) == 'r' || (at(i) == 'b' && at(i + 1) == 'r')) && (i == 0 || !ident(at(i - 1))) && {
            let k = if at(i) == 'b' { i + 2 } else { i + 1 };
            let hashes = (k..s.len()).take_while(|&j| s[j] == '#').count();
            at(k + hashes) == '"'
        } {
            // A raw string: r"…", r#"…"#, br"…".
            let k = if at(i) == 'b' { i + 2 } else { i + 1 };
            let hashes = (k..s.len()).take_while(|&j| s[j] == '#').count();
            let mut end = k + hashes + 1;
            while end < s.len() && !(s[end] == '"' && (1..=hashes).all(|h| at(end + h) == '#')) {
                end += 1;
            }
            let end = end + 1 + hashes;
            blank(&mut out, i, end);
            i = end;
        } else if at(i) == '"' {
            let mut k = i + 1;
            while k < s.len() && s[k] != '"' {
                k += if s[k] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i, k + 1);
            i = k + 1;
        } else if at(i) == '\'' {
            // A character literal ('x', '\n', '\u{..}'), else a lifetime or a label, which stays.
            if at(i + 1) == '\\' {
                let end = (i + 3..s.len()).find(|&k| s[k] == '\'').map_or(s.len(), |k| k + 1);
                blank(&mut out, i, end);
                i = end;
            } else if at(i + 2) == '\'' {
                blank(&mut out, i, i + 3);
                i += 3;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out.into_iter().collect()
}

/// The index just past the bracket that closes the one at `open`.
fn closing(toks: &[Tok], open: usize) -> usize {
    let (o, c) = match toks[open].text.as_str() {
        "(" => ("(", ")"),
        "[" => ("[", "]"),
        "{" => ("{", "}"),
        other => panic!("{other} opens nothing"),
    };
    let mut depth = 0;
    for (k, t) in toks.iter().enumerate().skip(open) {
        if t.text == o {
            depth += 1;
        } else if t.text == c {
            depth -= 1;
            if depth == 0 {
                return k + 1;
            }
        }
    }
    toks.len()
}

/// Whether a `cfg` predicate (its tokens, without the outer parentheses) holds only in tests: `test`, or an
/// `all(…)` with `test` among its terms.
fn test_only(pred: &[Tok]) -> bool {
    match pred.first().map(|t| t.text.as_str()) {
        Some("test") => pred.len() == 1,
        Some("all") if pred.get(1).is_some_and(|t| t.text == "(") => {
            let inner = &pred[2..closing(pred, 1) - 1];
            let mut depth = 0;
            let mut terms = vec![Vec::new()];
            for t in inner {
                match t.text.as_str() {
                    "(" => depth += 1,
                    ")" => depth -= 1,
                    "," if depth == 0 => {
                        terms.push(Vec::new());
                        continue;
                    }
                    _ => {}
                }
                terms.last_mut().unwrap().push(t.clone());
            }
            terms.iter().any(|t| test_only(t))
        }
        _ => false,
    }
}

/// `toks` without the items under a test-only `#[cfg(…)]`; none at all under a test-only `#![cfg(…)]`.
fn remove_test_items(toks: Vec<Tok>) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let inner = toks.get(i + 1).is_some_and(|t| t.text == "!");
        let open = if inner { i + 2 } else { i + 1 };
        if toks[i].text != "#" || toks.get(open).is_none_or(|t| t.text != "[") {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        let end = closing(&toks, open);
        let attr = &toks[open + 1..end - 1];
        let is_test =
            attr.len() >= 3 && attr[0].text == "cfg" && attr[1].text == "(" && test_only(&attr[2..attr.len() - 1]);
        if attr.first().is_some_and(|t| t.text == "path") {
            panic!("line {}: #[path] is not followed by this test; teach it", toks[i].line);
        }
        if !is_test {
            out.extend_from_slice(&toks[i..end]);
            i = end;
            continue;
        }
        if inner {
            return Vec::new();
        }
        // The item: any further attributes, then up to its `;` or through its `{…}` body.
        let mut k = end;
        while toks.get(k).is_some_and(|t| t.text == "#") && toks.get(k + 1).is_some_and(|t| t.text == "[") {
            k = closing(&toks, k + 1);
        }
        let mut depth = 0i32;
        while k < toks.len() {
            match toks[k].text.as_str() {
                "(" | "[" => depth += 1,
                ")" | "]" => depth -= 1,
                ";" if depth == 0 => {
                    k += 1;
                    break;
                }
                "{" if depth == 0 => {
                    k = closing(&toks, k);
                    break;
                }
                _ => {}
            }
            k += 1;
        }
        i = k;
    }
    out
}

/// The `mod x;` declarations (modules in files of their own).
fn child_modules(toks: &[Tok]) -> Vec<String> {
    toks.windows(3).filter(|w| w[0].text == "mod" && w[2].text == ";").map(|w| w[1].text.clone()).collect()
}

/// The first path segment after every `crate::`, each of a `crate::{a, b::c}` group included, with its line.
fn crate_refs(toks: &[Tok]) -> Vec<(String, usize)> {
    let mut refs = Vec::new();
    for i in 0..toks.len() {
        if toks[i].text != "crate" || toks.get(i + 1).is_none_or(|t| t.text != "::") {
            continue;
        }
        match toks.get(i + 2) {
            Some(t) if t.text == "{" => refs.extend(group_heads(&toks[i + 2..closing(toks, i + 2)])),
            Some(t) => refs.push((t.text.clone(), t.line)),
            None => {}
        }
    }
    refs
}

/// The first segment of each path in a use group `{a, b::c, d::{e, f}}` (its braces included).
fn group_heads(group: &[Tok]) -> Vec<(String, usize)> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expecting = false;
    for t in group {
        match t.text.as_str() {
            "{" => {
                depth += 1;
                expecting = depth == 1;
            }
            "}" => depth -= 1,
            "," if depth == 1 => expecting = true,
            _ if expecting => {
                if t.text != "self" && t.text != "*" {
                    heads.push((t.text.clone(), t.line));
                }
                expecting = false;
            }
            _ => {}
        }
    }
    heads
}

/// The names the crate root re-exports (`pub use exec::graph::MobileNetV3;`), each with the module it is from.
fn root_reexports(lib: &[Tok], modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for i in 0..lib.len() {
        if lib[i].text != "use" {
            continue;
        }
        let end = (i..lib.len()).find(|&k| lib[k].text == ";").unwrap_or(lib.len());
        let path: Vec<&str> = lib[i + 1..end].iter().map(|t| t.text.as_str()).collect();
        let from = match path.as_slice() {
            ["crate" | "self", "::", m, ..] | [m, ..] => m.to_string(),
            [] => continue,
        };
        if !modules.contains(&from) {
            continue;
        }
        // Every name the statement brings in: the one before each `,`, `}` or the end, or after an `as`.
        let mut k = 0;
        while k < path.len() {
            let last = k + 1 == path.len() || matches!(path[k + 1], "," | "}");
            let ident = path[k].chars().all(|c| c.is_alphanumeric() || c == '_');
            if last && ident && path[k] != "self" {
                names.insert(path[k].to_string(), from.clone());
            }
            k += 1;
        }
    }
    names
}

/// `src/a.rs:3,9, src/b.rs:1`.
fn show(places: &Places) -> String {
    let each = places
        .iter()
        .map(|(file, lines)| format!("{file}:{}", lines.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(",")));
    each.collect::<Vec<_>>().join(", ")
}

/// The graph as lines `a -> b, c`.
fn describe(graph: &Graph) -> String {
    let mut s = String::from("library module dependencies (module -> modules it names):\n");
    for (from, to) in graph {
        s.push_str(&format!("  {from} -> {}\n", to.keys().cloned().collect::<Vec<_>>().join(", ")));
    }
    s
}

/// The groups of modules that depend on each other (strongly connected components of more than one module).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for to in graph.get(&m).into_iter().flat_map(|e| e.keys()) {
                if seen.insert(to.clone()) {
                    todo.push(to.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|m| (m, reach(m))).collect();
    let mut groups: Vec<Vec<String>> = Vec::new();
    for m in graph.keys() {
        if !reaches[m].contains(m) || groups.iter().any(|g| g.contains(m)) {
            continue;
        }
        groups.push(graph.keys().filter(|o| reaches[m].contains(*o) && reaches[*o].contains(m)).cloned().collect());
    }
    groups
}

/// A shortest cycle through the first module of `group`, as the modules along it (the first repeated at the end).
fn one_cycle(graph: &Graph, group: &[String]) -> Option<Vec<String>> {
    let start = group.first()?;
    let mut previous: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    while let Some(m) = queue.pop_front() {
        for to in graph.get(&m).into_iter().flat_map(|e| e.keys()) {
            if to == start {
                let mut path = vec![m.clone()];
                while let Some(p) = previous.get(path.last().unwrap()) {
                    path.push(p.clone());
                }
                path.reverse();
                path.push(start.clone());
                return Some(path);
            }
            if !previous.contains_key(to) && to != start {
                previous.insert(to.clone(), m.clone());
                queue.push_back(to.clone());
            }
        }
    }
    None
}

/// The reader itself, on made-up sources: what counts as a reference and what does not, and that a cycle is
/// found (so that the test above can fail).
mod reader {
    use super::*;

    fn heads(source: &str) -> Vec<String> {
        crate_refs(&tokens(source)).into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn paths_and_use_groups_count() {
        let source = "use crate::{a, b::c, d::{e, f}, self};\nuse crate::g::H;\nfn x() { crate::h::f(); }\n\
                      pub(crate) fn y<'a>(s: &'a str) -> char { '{' }\nfn z() { $crate::i::j!() }";
        assert_eq!(heads(source), ["a", "b", "d", "g", "h", "i"]);
    }

    #[test]
    fn comments_literals_and_test_code_do_not() {
        let source = r##"
            //! crate::doc
            // crate::line
            /* crate::block /* nested crate::inner */ still crate::comment */
            const S: &str = "crate::string \" crate::escaped";
            const R: &str = r#"crate::raw "quoted" crate::raw"#;
            const C: char = '"';
            #[cfg(test)]
            mod tests { use crate::tested; fn f() { crate::deep::g() } }
            #[cfg(all(test, feature = "cuda"))]
            mod cuda_tests;
            #[cfg(test)]
            #[allow(dead_code)]
            fn reference(x: [u8; 2]) -> u8 { crate::reference::f(x) }
            #[cfg(feature = "cuda")]
            fn kept() { crate::kept::f() }
            #[cfg(not(test))]
            fn also_kept() { crate::also::f() }
            fn after() { crate::after::f() }
        "##;
        assert_eq!(heads(source), ["kept", "also", "after"]);
        assert!(child_modules(&tokens(source)).is_empty());
        assert!(heads("#![cfg(test)]\nuse crate::x;").is_empty());
    }

    #[test]
    fn a_cycle_is_found_and_a_chain_is_not() {
        let mut graph = Graph::new();
        let mut edge = |a: &str, b: &str| {
            graph.entry(a.into()).or_default().entry(b.into()).or_default().insert(format!("src/{a}.rs"), [1].into());
            graph.entry(b.into()).or_default();
        };
        edge("train", "exec");
        edge("exec", "model");
        edge("model", "data");
        assert!(cycles(&graph).is_empty());
        let mut graph2 = graph.clone();
        graph2.get_mut("data").unwrap().entry("train".into()).or_default().insert("src/data.rs".into(), [2].into());
        let found = cycles(&graph2);
        assert_eq!(found, [vec!["data", "exec", "model", "train"]]);
        assert_eq!(one_cycle(&graph2, &found[0]).unwrap(), ["data", "train", "exec", "model", "data"]);
    }

    #[test]
    fn root_reexports_name_their_module() {
        let lib = tokens("pub mod exec;\npub mod model;\npub use exec::graph::MobileNetV3;\npub use model::arch::{ArchSpec, ModelConfig as Config};");
        let modules = child_modules(&lib).into_iter().collect();
        let names = root_reexports(&lib, &modules);
        assert_eq!(names.get("MobileNetV3").map(String::as_str), Some("exec"));
        assert_eq!(names.get("ArchSpec").map(String::as_str), Some("model"));
        assert_eq!(names.get("Config").map(String::as_str), Some("model"));
    }
}
