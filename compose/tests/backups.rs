//! `x-noco.backups`: what a stack declares, and each mistake named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{load_with, project};
use noco_compose::backups::{BackupContent, Retention, parse_schedule};

const BASE: &str = "services:\n  db:\n    image: postgres\n  web:\n    image: nginx\nvolumes:\n  media: {}\n  config: {}\n";

fn errors(x_noco: &str) -> String {
    let yaml = format!("{BASE}x-noco:\n{x_noco}");
    match load_with(&yaml, &[]) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(errors) => errors
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[test]
fn the_issue_s_example_reads_as_two_backups() {
    let p = project(&format!(
        "{BASE}x-noco:\n  backups:\n    db:\n      schedule: \"0 3 * * *\"\n      service: db\n      dump: [\"pg_dump\", \"-U\", \"app\", \"-Fc\", \"app\"]\n      restore: [\"pg_restore\", \"-U\", \"app\", \"-d\", \"app\", \"--clean\", \"--if-exists\"]\n      retention: {{keep_last: 3, keep_daily: 7, keep_weekly: 4}}\n    files:\n      schedule: \"@daily\"\n      volumes: [media, config]\n      stop: [web]\n"
    ));
    assert_eq!(p.backups.len(), 2);
    let db = &p.backups[0];
    assert_eq!(db.name, "db");
    assert_eq!(db.schedule.as_deref(), Some("0 3 * * *"));
    assert_eq!(
        db.retention,
        Retention {
            keep_last: 3,
            keep_daily: 7,
            keep_weekly: 4,
            ..Retention::default()
        }
    );
    match &db.content {
        BackupContent::Dump {
            service,
            dump,
            restore,
            verify,
        } => {
            assert_eq!(service, "db");
            assert_eq!(dump[0], "pg_dump");
            assert_eq!(restore.as_ref().unwrap().len(), 7);
            assert!(verify.is_none());
        }
        other => panic!("{other:?}"),
    }
    let files = &p.backups[1];
    assert_eq!(
        files.content,
        BackupContent::Volumes {
            volumes: vec!["config".into(), "media".into()]
        }
    );
    assert_eq!(files.stop, vec!["web".to_string()]);
    assert_eq!(files.retention.effective().keep_last, 7);
}

#[test]
fn a_file_without_backups_has_none() {
    assert!(project(BASE).backups.is_empty());
    assert!(
        project(&format!("{BASE}x-noco:\n  profiles: [x]\n"))
            .backups
            .is_empty()
    );
}

#[test]
fn each_mistake_is_named() {
    let cases = [
        (
            "  backups:\n    db:\n      service: db\n      dump: [a]\n      volumes: [media]\n",
            "both dump and volumes",
        ),
        (
            "  backups:\n    db:\n      schedule: \"@daily\"\n",
            "needs dump",
        ),
        (
            "  backups:\n    db:\n      dump: [a]\n",
            "no service to run it in",
        ),
        (
            "  backups:\n    db:\n      service: dbx\n      dump: [a]\n",
            "no service \"dbx\" in this file: did you mean \"db\"",
        ),
        (
            "  backups:\n    db:\n      service: db\n      dump: \"pg_dump -U app\"\n",
            "noco runs no shell",
        ),
        (
            "  backups:\n    db:\n      service: db\n      dump: [a]\n      schedul: \"@daily\"\n",
            "did you mean \"schedule\"",
        ),
        (
            "  backups:\n    db:\n      service: db\n      dump: [a]\n      schedule: \"0 3 * *\"\n",
            "is not a cron schedule",
        ),
        (
            "  backups:\n    db:\n      service: db\n      dump: [a]\n      schedule: \"@sometimes\"\n",
            "is not a schedule",
        ),
        (
            "  backups:\n    f:\n      volumes: [medai]\n",
            "no volume \"medai\"",
        ),
        (
            "  backups:\n    f:\n      volumes: [media]\n      stop: [wbe]\n",
            "no service \"wbe\"",
        ),
        (
            "  backups:\n    f:\n      volumes: [media]\n      retention: {keep_dayly: 3}\n",
            "did you mean \"keep_daily\"",
        ),
        (
            "  backups:\n    f:\n      volumes: [media]\n      retention: {keep_last: -1}\n",
            "keep_last",
        ),
        (
            "  backups:\n    f.x:\n      volumes: [media]\n",
            "is not valid",
        ),
        (
            "  backups:\n    f:\n      volumes: [media]\n      recipients: [ssh-ed25519 AAAA]\n",
            "not an age X25519 recipient",
        ),
        (
            "  backups:\n    f:\n      volumes: [media]\n      restore: [tar, x]\n",
            "restore and verify commands go with a dump",
        ),
    ];
    for (x_noco, want) in cases {
        let got = errors(x_noco);
        assert!(
            got.contains(want),
            "for\n{x_noco}\nwanted {want:?}, got:\n{got}"
        );
    }
}

#[test]
fn schedules_take_cron_with_or_without_seconds_and_the_usual_names() {
    for ok in [
        "0 3 * * *",
        "*/5 * * * *",
        "30 0 3 * * *",
        "@daily",
        "@hourly",
        "@weekly",
        "@monthly",
        "@yearly",
    ] {
        assert!(parse_schedule(ok).is_ok(), "{ok}");
    }
    for bad in ["", "   ", "0 3 * *", "61 * * * *", "@reboot", "daily"] {
        assert!(parse_schedule(bad).is_err(), "{bad}");
    }
}
