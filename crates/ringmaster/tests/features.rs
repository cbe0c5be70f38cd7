//! The drivers are cargo features: an application built with
//! `default-features = false, features = ["postgres"]` compiles neither
//! SQLite nor Redis, and still builds.

use std::process::Command;

fn cargo() -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    cmd
}

fn tree(features: &str) -> String {
    let out = cargo()
        .args([
            "tree",
            "-p",
            "ringmaster",
            "--no-default-features",
            "--features",
        ])
        .args([features, "-e", "normal", "--prefix", "none", "--offline"])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn each_driver_is_compiled_only_when_its_feature_is_on() {
    let pg = tree("postgres");
    for absent in ["libsqlite3-sys", "sqlx-sqlite", "redis "] {
        assert!(!pg.contains(absent), "postgres only, yet {absent}:\n{pg}");
    }
    assert!(pg.contains("sqlx-postgres"), "{pg}");
    let sqlite = tree("sqlite");
    for absent in ["sqlx-postgres", "redis ", "rustls"] {
        assert!(
            !sqlite.contains(absent),
            "sqlite only, yet {absent}:\n{sqlite}"
        );
    }
    let all = tree("sqlite,postgres,redis");
    for present in ["libsqlite3-sys", "sqlx-postgres", "redis "] {
        assert!(all.contains(present), "all features, no {present}");
    }
}

#[test]
fn a_postgres_only_build_compiles() {
    // A target directory of its own: other feature sets, and no lock held
    // by the build that runs this test.
    let target = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/features-check");
    let out = cargo()
        .args(["check", "-q", "-p", "ringmaster", "--no-default-features"])
        .args([
            "--features",
            "postgres",
            "--offline",
            "--target-dir",
            target,
        ])
        .output()
        .expect("cargo check runs");
    assert!(
        out.status.success(),
        "ringmaster does not build with only the postgres feature:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
