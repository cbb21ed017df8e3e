//! Robustness: a few hundred deterministic mutations and truncations of the seed stacks never
//! make `load` panic; each gives a project or diagnostics.

mod common;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use common::seed;
use noco_compose::{FileSource, LoadOptions, load};

const SEEDS: [&str; 5] = [
    "000-nocoflo.yaml",
    "001-ai-scrum-master.yaml",
    "002-cozywish.yaml",
    "003-shadower-analytics.yaml",
    "004-dot2archimate.yaml",
];

/// Snippets that poke at YAML and compose syntax.
const INSERTS: [&str; 24] = [
    ":",
    "- ",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "*a",
    "<<: *a\n",
    "${",
    "${X:?boom}",
    "$",
    "\t",
    "\"",
    "'",
    "!!str ",
    "? ",
    "|\n",
    "\n  ",
    "\n---\n",
    "~",
    "0o17",
    "\u{feff}",
    "é",
];

/// A small deterministic generator (xorshift), so no rand crate is needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// The char boundary at or before `i`.
fn boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(text: &str, rng: &mut Rng) -> String {
    let lines: Vec<&str> = text.lines().collect();
    match rng.below(6) {
        // truncate
        0 => text[..boundary(text, rng.below(text.len() + 1))].to_owned(),
        // insert a snippet
        1 => {
            let at = boundary(text, rng.below(text.len() + 1));
            format!(
                "{}{}{}",
                &text[..at],
                INSERTS[rng.below(INSERTS.len())],
                &text[at..]
            )
        }
        // delete a range
        2 => {
            let a = boundary(text, rng.below(text.len() + 1));
            let b = boundary(text, a + rng.below(40));
            format!("{}{}", &text[..a], &text[b..])
        }
        // drop or duplicate a line
        3 => {
            let i = rng.below(lines.len());
            let mut out: Vec<&str> = lines.clone();
            if rng.below(2) == 0 {
                out.remove(i);
            } else {
                out.insert(i, lines[i]);
            }
            out.join("\n")
        }
        // re-indent a line
        4 => {
            let i = rng.below(lines.len());
            let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            out[i] = if rng.below(2) == 0 {
                format!("  {}", out[i])
            } else {
                out[i].trim_start().to_owned()
            };
            out.join("\n")
        }
        // swap two lines
        _ => {
            let mut out: Vec<&str> = lines.clone();
            let (i, j) = (rng.below(out.len()), rng.below(out.len()));
            out.swap(i, j);
            out.join("\n")
        }
    }
}

/// Any path reads as a small env file.
struct AnyFile;

impl FileSource for AnyFile {
    fn read(&self, _path: &str) -> Result<String, String> {
        Ok("A=1\nB='two'\n".to_owned())
    }
}

#[test]
fn mutated_seed_files_never_panic() {
    let variables: BTreeMap<String, String> = [("DB_PASSWORD", "pw"), ("X", "x"), ("DB_USER", "u")]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut outcomes = (0usize, 0usize);
    for file in SEEDS {
        let original = seed(file);
        for round in 0..80 {
            // Stack up to three mutations so later ones hit already broken text.
            let mut text = original.clone();
            for _ in 0..=(round % 3) {
                text = mutate(&text, &mut rng);
            }
            let opts = LoadOptions {
                project_name: Some("fuzz"),
                variables: &variables,
                files: &AnyFile,
                profiles: &[],
                directory: None,
            };
            match catch_unwind(AssertUnwindSafe(|| load(&text, &opts))) {
                Ok(Ok(_)) => outcomes.0 += 1,
                Ok(Err(errors)) => {
                    assert!(!errors.is_empty(), "an Err must carry diagnostics:\n{text}");
                    outcomes.1 += 1;
                }
                Err(_) => panic!("load panicked on a mutation of {file} (round {round}):\n{text}"),
            }
        }
    }
    // The mutations must exercise both outcomes to mean anything.
    assert!(
        outcomes.0 > 10 && outcomes.1 > 100,
        "loaded {}, refused {}",
        outcomes.0,
        outcomes.1
    );
}

#[test]
fn hostile_inputs_are_refused_quickly() {
    let variables = BTreeMap::new();
    let opts = LoadOptions {
        project_name: Some("p"),
        variables: &variables,
        files: &noco_compose::NoFiles,
        profiles: &[],
        directory: None,
    };
    let mut laughs = String::from("x-a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("x-a{i}: &a{i} [{refs}]\n"));
    }
    laughs.push_str("services:\n  s:\n    image: i\n    command: *a9\n");
    let deep = format!(
        "services:\n  s:\n    image: i\n    labels: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let huge = format!(
        "services:\n  s:\n    image: i\n    command: \"{}\"\n",
        "x".repeat(2 * 1024 * 1024)
    );
    let many_dollars = format!(
        "services:\n  s:\n    image: i\n    command: \"{}\"\n",
        "${A:-".repeat(20_000)
    );
    for (name, text) in [
        ("billion laughs", laughs),
        ("deep nesting", deep),
        ("2 MiB", huge),
        ("nested ${", many_dollars),
    ] {
        let started = std::time::Instant::now();
        let result = load(&text, &opts);
        assert!(result.is_err(), "{name} should be refused");
        assert!(
            started.elapsed().as_secs() < 10,
            "{name} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn long_dependency_chains_do_not_overflow() {
    let mut yaml = String::from("services:\n");
    // Deep enough to overflow a recursive walk on a test thread's stack; small enough to
    // parse quickly in a debug build.
    let n = 5_000;
    for i in 0..n {
        yaml.push_str(&format!(
            "  s{i}:\n    image: i\n    depends_on: [s{}]\n",
            (i + 1) % n
        ));
    }
    let variables = BTreeMap::new();
    let opts = LoadOptions {
        project_name: Some("p"),
        variables: &variables,
        files: &noco_compose::NoFiles,
        profiles: &[],
        directory: None,
    };
    match load(&yaml, &opts) {
        Ok(_) => panic!("a cycle through every service should be refused"),
        Err(errors) => {
            assert_eq!(errors.len(), 1);
            assert!(
                errors[0]
                    .message
                    .starts_with("dependency cycle: s0 -> s1 -> s2 -> s3 -> "),
                "{}",
                &errors[0].message[..80]
            );
        }
    }
}
