//! The project name, as docker compose decides it: `-p`, else `COMPOSE_PROJECT_NAME` from the
//! env files, else the top-level `name:`, else the compose file's directory name. `-p` and
//! `COMPOSE_PROJECT_NAME` are used as given and refused unless valid; `name:` and the directory
//! name are normalized (lowercase; only a-z, 0-9, `_`, `-`; starting with a letter or digit).
//! Where no valid name can be made, the error says so and suggests `-p`.

mod common;

use common::vars;
use noco_compose::{LoadOptions, NoFiles, load};

const SERVICES: &str = "services:\n  a:\n    image: a\n";

/// One way of naming the project.
#[derive(Default, Clone, Copy)]
struct Given<'a> {
    /// The top-level `name:` line, if any (`name: …`).
    name: Option<&'a str>,
    /// `-p`
    flag: Option<&'a str>,
    /// `COMPOSE_PROJECT_NAME` among the variables.
    env: Option<&'a str>,
    /// The compose file's directory name.
    dir: Option<&'a str>,
}

/// The project name and the warnings, or the errors.
fn name(g: Given) -> Result<(String, Vec<String>), Vec<String>> {
    let yaml = match g.name {
        Some(line) => format!("{line}\n{SERVICES}"),
        None => SERVICES.to_owned(),
    };
    let mut pairs = vec![("STACK", "Shop")];
    if let Some(env) = g.env {
        pairs.push(("COMPOSE_PROJECT_NAME", env));
    }
    let variables = vars(&pairs);
    load(
        &yaml,
        &LoadOptions {
            project_name: g.flag,
            variables: &variables,
            files: &NoFiles,
            profiles: &[],
            directory: g.dir,
        },
    )
    .map(|l| {
        let warnings = l.warnings.iter().map(|w| w.to_string()).collect();
        (l.project.name, warnings)
    })
    .map_err(|e| e.into_iter().map(|d| d.to_string()).collect())
}

#[test]
fn the_name_comes_from_the_flag_then_the_env_files_then_the_file_then_its_directory() {
    let all = Given {
        name: Some("name: from-file"),
        flag: Some("flag"),
        env: Some("env"),
        dir: Some("dir"),
    };
    let cases: &[(Given, &str)] = &[
        (all, "flag"),
        (Given { flag: None, ..all }, "env"),
        (
            Given {
                flag: None,
                env: None,
                ..all
            },
            "from-file",
        ),
        (
            Given {
                flag: None,
                env: None,
                name: None,
                ..all
            },
            "dir",
        ),
        // An empty flag, variable or name counts as none, as in compose.
        (
            Given {
                flag: Some(""),
                env: Some(""),
                name: Some("name: ''"),
                ..all
            },
            "dir",
        ),
        (
            Given {
                name: Some("name: ${STACK}-prod"),
                ..Given::default()
            },
            "shop-prod",
        ),
        (
            Given {
                dir: Some("Shop.Front_2"),
                ..Given::default()
            },
            "shopfront_2",
        ),
        (
            Given {
                dir: Some("-_x"),
                ..Given::default()
            },
            "x",
        ),
        (
            Given {
                dir: Some("42"),
                ..Given::default()
            },
            "42",
        ),
    ];
    for (given, want) in cases {
        match name(*given) {
            Ok((got, _)) => assert_eq!(got, *want),
            Err(e) => panic!("want {want:?}, got {e:?}"),
        }
    }
}

#[test]
fn a_name_from_the_file_or_its_directory_is_normalized_one_given_as_is_must_be_valid() {
    // `name:` is normalized, with a warning; the directory name silently, as compose does.
    assert_eq!(
        name(Given {
            name: Some("name: My.App"),
            ..Given::default()
        }),
        Ok((
            "myapp".into(),
            vec!["name (line 1): project name \"My.App\" normalized to \"myapp\"".into()]
        ))
    );
    assert_eq!(
        name(Given {
            dir: Some("My App"),
            ..Given::default()
        }),
        Ok(("myapp".into(), vec![]))
    );
    // -p and COMPOSE_PROJECT_NAME are refused unless valid, as compose refuses them.
    assert_eq!(
        name(Given {
            flag: Some("My.App"),
            ..Given::default()
        }),
        Err(vec![
            "invalid project name \"My.App\": it must consist only of lowercase letters, digits, '-' and '_', and start with a letter or digit; did you mean \"myapp\"?".into()
        ])
    );
    for bad in ["_web", "-web", "WEB", "w.b"] {
        let errs = name(Given {
            env: Some(bad),
            dir: Some("dir"),
            ..Given::default()
        })
        .map(|(n, _)| n);
        assert!(
            matches!(&errs, Err(e) if e.len() == 1 && e[0].starts_with(&format!("invalid project name {bad:?} from COMPOSE_PROJECT_NAME:")) && e[0].ends_with("(-p overrides it)")),
            "{bad}: {errs:?}"
        );
    }
}

#[test]
fn where_no_valid_name_can_be_made_the_error_says_so_and_suggests_the_flag() {
    let cases: &[(Given, &str)] = &[
        (
            Given::default(),
            "no project name: pass one (-p) or set a top-level \"name:\"",
        ),
        (
            Given {
                dir: Some("ÄÖ"),
                ..Given::default()
            },
            "no project name: the directory name \"ÄÖ\" has no usable characters (lowercase letters, digits, '_', '-'): pass one with -p or set a top-level \"name:\"",
        ),
        (
            Given {
                name: Some("name: ÄÖ"),
                dir: Some("dir"),
                ..Given::default()
            },
            "name (line 1): project name \"ÄÖ\" has no usable characters (lowercase letters, digits, '_', '-'): pass one with -p",
        ),
        (
            Given {
                flag: Some("..."),
                ..Given::default()
            },
            "invalid project name \"...\": it must consist only of lowercase letters, digits, '-' and '_', and start with a letter or digit",
        ),
    ];
    for (given, want) in cases {
        assert_eq!(name(*given), Err(vec![want.to_string()]));
    }
}
