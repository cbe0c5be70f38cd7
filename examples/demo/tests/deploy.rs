//! The deployment files in `deploy/`: the systemd units pass
//! `systemd-analyze verify`, the Kubernetes manifests pass
//! `kubernetes-validate --strict`, and what the units, the Dockerfile and
//! the Deployment set agrees with the code (the binary accepts their
//! environment; their stop timeouts cover the drain).
//!
//! Both tools must be installed: a missing one fails the test, saying how
//! to install it (`.ci/run` installs both when missing).
//!
//! What was found about them on Debian 12:
//! - `systemd-analyze verify` (systemd 252) works without systemd as PID 1
//!   (in a container): it loads the given unit files into a private test
//!   manager. Unit generators are off by default there, `--man=no` skips
//!   looking up `man:` pages. It checks that every `Exec*=` binary exists
//!   (hence the real binary is put in ExecStart) and that units named by
//!   `Requires=`/`Service=` can be loaded (exit 1), but a bad key or value
//!   (`Typ=notify`, `KillMode=mixd`, a port out of range) is only a
//!   warning on stderr with exit 0: so any line that names our units fails
//!   the test, whatever the exit code.
//! - `kubernetes-validate` (1.37.0 from PyPI) bundles the JSON schemas of
//!   Kubernetes 1.25 to 1.37 and needs no network; it defaults to the
//!   newest (1.37), so no `--kubernetes-version` is passed. It prints
//!   `INFO ... passed`, `ERROR ... did not validate` (exit 1) or, for a
//!   kind it has no schema for, `WARN ...` with exit 0: a WARN fails the
//!   test too, and every file must have its `passed` line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ringmaster_testkit::output_within;

/// Where the unit files say the binary is installed.
const INSTALLED_EXE: &str = "/usr/local/bin/ringmaster-demo";

/// How long one run of a checking tool may take.
const TOOL_LIMIT: Duration = Duration::from_secs(60);

/// The master kills a worker this long after its drain_timeout.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// The exit code of a refused configuration (EX_CONFIG).
const EXIT_CONFIG: i32 = 78;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A directory of its own under the system's temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let dir =
            std::env::temp_dir().join(format!("ringmaster-deploy-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails the test unless `name` runs (`name ARGS` exits 0), saying how to
/// install it. A pyenv shim of a program that is not installed exits 127.
fn require_tool(name: &str, args: &[&str], install: &str) {
    let missing = |why: String| -> ! {
        panic!(
            "{name} is needed by this test and {why}. Install it: {install} \
             (.ci/run installs it when missing)"
        )
    };
    match Command::new(name).args(args).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) if out.status.code() == Some(127) => {
            missing(format!("is not installed ({})", text(&out.stderr).trim()))
        }
        Ok(out) => missing(format!(
            "does not run: `{name} {}` exited with {}: {}{}",
            args.join(" "),
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing("is not on PATH".to_owned()),
        Err(e) => missing(format!("could not be started: {e}")),
    }
}

fn show(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

// --- Kubernetes ---------------------------------------------------------------

/// The manifests in deploy/k8s, sorted.
fn manifests() -> Vec<PathBuf> {
    let dir = deploy("k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifest in {}", dir.display());
    files
}

/// Runs `kubernetes-validate --strict` on `files`: `Err` with its output
/// unless it exits 0, prints no WARN or ERROR line and says `passed` for
/// every file.
fn kubernetes_validate(files: &[PathBuf]) -> Result<(), String> {
    require_tool(
        "kubernetes-validate",
        &["--version"],
        "`pip install kubernetes-validate` (or `python3 -m pip install kubernetes-validate`)",
    );
    let mut cmd = Command::new("kubernetes-validate");
    cmd.arg("--strict").args(files);
    let out = output_within(cmd, TOOL_LIMIT);
    let stdout = text(&out.stdout);
    let mut problems = Vec::new();
    if !out.status.success() {
        problems.push(format!("exit {}", out.status));
    }
    for line in stdout.lines().chain(text(&out.stderr).lines()) {
        if line.starts_with("WARN") || line.starts_with("ERROR") {
            problems.push(line.to_owned());
        }
    }
    for file in files {
        let passed = format!("INFO {} passed", file.display());
        if !stdout.lines().any(|l| l.starts_with(&passed)) {
            problems.push(format!("no `passed` line for {}", file.display()));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n{}", problems.join("\n"), show(&out)))
    }
}

#[test]
fn the_kubernetes_manifests_pass_strict_validation() {
    if let Err(report) = kubernetes_validate(&manifests()) {
        panic!("kubernetes-validate --strict rejects deploy/k8s:\n{report}");
    }
}

/// The check above is not vacuous: a misspelled field fails it.
#[test]
fn the_kubernetes_check_rejects_a_misspelled_field() {
    let scratch = Scratch::new("k8s-typo");
    let bad = scratch.path().join("deployment.yaml");
    let good = read(&deploy("k8s/deployment.yaml"));
    assert!(good.contains("periodSeconds:"));
    std::fs::write(&bad, good.replacen("periodSeconds:", "periodSecnds:", 1)).unwrap();
    let report = kubernetes_validate(&[bad]).expect_err("a misspelled field must fail");
    assert!(report.contains("periodSecnds"), "{report}");
}

// --- systemd ------------------------------------------------------------------

const SERVICE: &str = "ringmaster-demo.service";
const SOCKET: &str = "ringmaster-demo.socket";

/// Writes the two units into `dir`, the service's installed binary path
/// replaced by the binary cargo built (`verify` checks that it exists),
/// after `edit` has changed (unit name, text).
fn write_units(dir: &Path, edit: impl Fn(&str, String) -> String) {
    let exe = env!("CARGO_BIN_EXE_ringmaster-demo");
    assert!(
        !exe.contains(char::is_whitespace),
        "the built binary's path {exe:?} has a space: ExecStart= would split it"
    );
    for unit in [SERVICE, SOCKET] {
        let mut unit_text = read(&deploy("systemd").join(unit));
        if unit == SERVICE {
            let exec = format!("ExecStart={INSTALLED_EXE} ");
            assert!(
                unit_text.contains(&exec),
                "{unit} has no `{exec}...` line to point at the built binary"
            );
            unit_text = unit_text.replace(&exec, &format!("ExecStart={exe} "));
        }
        std::fs::write(dir.join(unit), edit(unit, unit_text)).unwrap();
    }
}

/// Runs `systemd-analyze verify` on the units in `dir`: `Err` with its
/// output when it exits non-zero or prints any line naming one of them
/// (it names a unit by its path for a parse warning, by its name for a
/// load error).
fn systemd_verify(dir: &Path) -> Result<(), String> {
    require_tool(
        "systemd-analyze",
        &["--version"],
        "`apt-get install systemd` (Debian's package; no running systemd is needed)",
    );
    let mut cmd = Command::new("systemd-analyze");
    cmd.current_dir(dir)
        .args(["verify", "--man=no"])
        .arg(dir.join(SERVICE))
        .arg(dir.join(SOCKET));
    let out = output_within(cmd, TOOL_LIMIT);
    let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let ours: Vec<&str> = printed
        .lines()
        .filter(|l| l.contains(SERVICE) || l.contains(SOCKET))
        .collect();
    if !out.status.success() || !ours.is_empty() {
        return Err(format!("{}\n{}", ours.join("\n"), show(&out)));
    }
    if !printed.trim().is_empty() {
        // Lines about other units (a dependency's own file), not ours.
        eprintln!("systemd-analyze verify printed, about other units:\n{printed}");
    }
    Ok(())
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let scratch = Scratch::new("units");
    write_units(scratch.path(), |_, t| t);
    if let Err(report) = systemd_verify(scratch.path()) {
        panic!("systemd-analyze verify rejects deploy/systemd:\n{report}");
    }
}

/// The check above is not vacuous: a misspelled key in the service, a bad
/// value in the socket, each fail it (systemd-analyze itself exits 0 for
/// both).
#[test]
fn the_systemd_check_rejects_a_misspelled_key_and_a_bad_value() {
    let cases = [
        (
            SERVICE,
            "Type=notify\n",
            "Typ=notify\n",
            "Unknown key 'Typ'",
        ),
        (
            SOCKET,
            "ListenStream=0.0.0.0:3001\n",
            "ListenStream=0.0.0.0:99999\n",
            "0.0.0.0:99999",
        ),
    ];
    for (i, (unit, from, to, says)) in cases.into_iter().enumerate() {
        let scratch = Scratch::new(&format!("bad-unit-{i}"));
        write_units(scratch.path(), |name, t| {
            if name != unit {
                return t;
            }
            assert!(t.contains(from), "{unit} has no line {from:?} to break");
            t.replacen(from, to, 1)
        });
        let report = systemd_verify(scratch.path())
            .expect_err(&format!("{unit} with {to:?} must fail the check"));
        assert!(report.contains(says), "{unit} with {to:?}: {report}");
    }
}

/// The values of `Key=` lines of a unit file (comments skipped).
fn unit_values<'a>(unit_text: &'a str, key: &str) -> Vec<&'a str> {
    unit_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .collect()
}

/// The `RINGMASTER__…` variables the service's `Environment=` lines set.
fn service_env() -> Vec<(String, String)> {
    let unit = read(&deploy("systemd").join(SERVICE));
    unit_values(&unit, "Environment")
        .into_iter()
        .flat_map(|v| v.split_whitespace())
        .map(|kv| kv.trim_matches('"'))
        .filter(|kv| kv.starts_with("RINGMASTER__"))
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("NAME=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// With one socket unit the master matches sockets to groups by address
/// (FileDescriptorName= names every fd of a unit alike): the service must
/// set each group's listen to exactly the addresses the socket binds.
#[test]
fn the_socket_unit_binds_where_the_service_says_the_groups_listen() {
    let socket = read(&deploy("systemd").join(SOCKET));
    let names = unit_values(&socket, "FileDescriptorName");
    assert!(
        names.len() <= 1,
        "{SOCKET} sets FileDescriptorName= {} times ({names:?}): it names all the unit's \
         sockets, the last one wins; use one socket unit per group to name them",
        names.len()
    );
    let mut bound = unit_values(&socket, "ListenStream");
    bound.sort_unstable();
    let env = service_env();
    let mut listens: Vec<&str> = env
        .iter()
        .filter(|(k, _)| k.ends_with("__LISTEN"))
        .map(|(_, v)| v.as_str())
        .collect();
    listens.sort_unstable();
    assert_eq!(
        bound, listens,
        "{SOCKET}'s ListenStream= lines and {SERVICE}'s RINGMASTER__...__LISTEN variables differ"
    );
    assert_eq!(bound.len(), 3, "web, api and admin: {bound:?}");
}

// --- Docker and Kubernetes environments -----------------------------------------

/// The `RINGMASTER__…` variables of the Dockerfile's `ENV` instruction(s).
fn dockerfile_env() -> Vec<(String, String)> {
    let dockerfile = read(&deploy("Dockerfile"));
    let mut env = Vec::new();
    let mut in_env = false;
    for line in dockerfile.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let rest = match line.strip_prefix("ENV ") {
            Some(rest) => rest,
            None if in_env => line,
            None => continue,
        };
        in_env = rest.ends_with('\\');
        for kv in rest.trim_end_matches('\\').split_whitespace() {
            if let Some((k, v)) = kv.split_once('=')
                && k.starts_with("RINGMASTER__")
            {
                env.push((k.to_owned(), v.trim_matches('"').to_owned()));
            }
        }
    }
    assert!(
        !env.is_empty(),
        "the Dockerfile sets no RINGMASTER__ variable"
    );
    env
}

/// The Deployment container's `RINGMASTER__…` variables: `Some(value)`,
/// or `None` for one taken from a Secret (`valueFrom:`).
fn deployment_env() -> Vec<(String, Option<String>)> {
    let yaml = read(&deploy("k8s/deployment.yaml"));
    let lines: Vec<&str> = yaml
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut env = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("- name: RINGMASTER__") else {
            continue;
        };
        let next = lines.get(i + 1).copied().unwrap_or("");
        let value = if let Some(v) = next.strip_prefix("value:") {
            Some(v.trim().trim_matches('"').to_owned())
        } else {
            assert!(
                next.starts_with("valueFrom:"),
                "RINGMASTER__{name} in the Deployment has neither value: nor valueFrom:"
            );
            None
        };
        env.push((format!("RINGMASTER__{name}"), value));
    }
    env
}

/// An admin token for the variables the Deployment takes from a Secret.
const TEST_TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

/// The environment of a pod: the image's `ENV`, overridden by the
/// Deployment's, with placeholders for the Secrets.
fn pod_env() -> Vec<(String, String)> {
    let mut env = dockerfile_env();
    for (name, value) in deployment_env() {
        let value = value.unwrap_or_else(|| match name.as_str() {
            "RINGMASTER__ADMIN__TOKEN" => TEST_TOKEN.to_owned(),
            _ => panic!("{name} comes from a Secret: give it a placeholder in pod_env"),
        });
        env.retain(|(k, _)| *k != name);
        env.push((name, value));
    }
    env
}

/// Runs `ringmaster-demo check --config <repo>/ringmaster.toml` (the file
/// the image and the units use) with `env`, in a scratch directory, the
/// SQLite backend in it; no other `RINGMASTER__` variable leaks in.
fn check(env: &[(String, String)], scratch: &Scratch) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringmaster-demo"));
    cmd.current_dir(scratch.path())
        .arg("check")
        .arg("--config")
        .arg(repo().join("ringmaster.toml"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("RINGMASTER") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v))).env(
        "RINGMASTER__BACKENDS__MAIN__URL",
        format!("sqlite://{}/demo.db", scratch.path().display()),
    );
    output_within(cmd, TOOL_LIMIT)
}

/// `check` accepts `env`, and its groups (web, api, admin, no more) listen
/// where `env` says.
fn assert_accepted(what: &str, env: &[(String, String)]) {
    let scratch = Scratch::new(&format!("check-{what}"));
    let out = check(env, &scratch);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: `ringmaster-demo check` refuses {env:?}:\n{}",
        show(&out)
    );
    let groups: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("group "))
        .collect();
    let names: Vec<&str> = groups.iter().filter_map(|g| g.split(':').next()).collect();
    assert_eq!(names, ["web", "api", "admin"], "{what}:\n{stdout}");
    for (k, v) in env {
        let group = match k.as_str() {
            "RINGMASTER__ADMIN__LISTEN" => "admin".to_owned(),
            _ => match k.strip_prefix("RINGMASTER__GROUPS__") {
                Some(rest) if rest.ends_with("__LISTEN") => {
                    rest.trim_end_matches("__LISTEN").to_lowercase()
                }
                _ => continue,
            },
        };
        assert!(
            groups
                .iter()
                .any(|g| g.starts_with(&format!("{group}:")) && g.contains(&format!(" on {v} "))),
            "{what}: {k}={v}, but check says:\n{stdout}"
        );
    }
}

/// The variables the deployment files set are ones the binary's
/// configuration accepts (a misspelled key is refused: every table denies
/// unknown fields), and put the groups where the files say.
#[test]
fn the_dockerfile_the_deployment_and_the_units_set_what_the_binary_accepts() {
    let image = dockerfile_env();
    for name in [
        "RINGMASTER__GROUPS__WEB__LISTEN",
        "RINGMASTER__GROUPS__API__LISTEN",
        "RINGMASTER__ADMIN__LISTEN",
    ] {
        assert!(
            image.iter().any(|(k, _)| k == name),
            "the Dockerfile does not set {name}"
        );
    }

    // The image alone: the admin worker on 0.0.0.0 wants a token, which the
    // image does not carry (its comment says `docker run -e
    // RINGMASTER__ADMIN__TOKEN=...`): without one the master refuses.
    let scratch = Scratch::new("check-image-alone");
    let out = check(&image, &scratch);
    assert!(
        out.status.code() == Some(EXIT_CONFIG) && text(&out.stderr).contains("admin.token"),
        "the image's environment alone must be refused for want of admin.token, \
         and for nothing else:\n{}",
        show(&out)
    );
    let mut with_token = image.clone();
    with_token.push(("RINGMASTER__ADMIN__TOKEN".to_owned(), TEST_TOKEN.to_owned()));
    assert_accepted("docker run -e RINGMASTER__ADMIN__TOKEN", &with_token);

    assert!(
        deployment_env()
            .iter()
            .any(|(k, _)| k == "RINGMASTER__ADMIN__TOKEN"),
        "the Deployment must give the admin worker its token (it listens on 0.0.0.0)"
    );
    assert_accepted("the Kubernetes pod", &pod_env());
    assert_accepted("the systemd service", &service_env());
}

/// A duration as the files write it: `45s`, `45`, `500ms`, `1m`.
fn duration(s: &str) -> Duration {
    let s = s.trim().trim_matches('"');
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("a duration: {s:?}"));
    match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n * 60),
        _ => panic!("a duration: {s:?}"),
    }
}

/// The longest drain_timeout of the groups `env` configures over
/// ringmaster.toml (the default, 30 s, for groups that set none).
fn longest_drain(env: &[(String, String)]) -> Duration {
    let config = ringmaster::Config::load(Some(&repo().join("ringmaster.toml")), env.to_vec())
        .unwrap_or_else(|e| panic!("load ringmaster.toml with {env:?}: {e}"));
    config
        .groups
        .values()
        .map(|g| g.drain_timeout)
        .max()
        .expect("at least one group")
}

/// Kubernetes and systemd give the master, after TERM, at least its
/// shutdown_delay plus the longest drain_timeout plus the kill grace
/// before they KILL it.
#[test]
fn the_stop_timeouts_cover_the_shutdown_delay_and_the_drain() {
    // Kubernetes: terminationGracePeriodSeconds.
    let yaml = read(&deploy("k8s/deployment.yaml"));
    let code: Vec<&str> = yaml
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let grace = code
        .iter()
        .find_map(|l| l.strip_prefix("terminationGracePeriodSeconds:"))
        .map(duration)
        .expect("the Deployment sets terminationGracePeriodSeconds");
    assert!(
        !code.iter().any(|l| l.starts_with("preStop:")),
        "a preStop hook runs before the TERM, inside the same grace period: count it here"
    );
    let delay = deployment_env()
        .into_iter()
        .find(|(k, _)| k == "RINGMASTER__SERVER__SHUTDOWN_DELAY")
        .and_then(|(_, v)| v)
        .map(|v| duration(&v))
        .expect("the Deployment sets RINGMASTER__SERVER__SHUTDOWN_DELAY");
    let drain = longest_drain(&pod_env());
    assert!(
        grace >= delay + drain + KILL_GRACE,
        "terminationGracePeriodSeconds {grace:?} < shutdown_delay {delay:?} + \
         drain_timeout {drain:?} + {KILL_GRACE:?}"
    );

    // systemd: TimeoutStopSec.
    let unit = read(&deploy("systemd").join(SERVICE));
    let stop = unit_values(&unit, "TimeoutStopSec");
    let [stop] = stop[..] else {
        panic!("{SERVICE} sets TimeoutStopSec= once, not {stop:?}");
    };
    let stop = duration(stop);
    let env = service_env();
    let delay = env
        .iter()
        .find(|(k, _)| k == "RINGMASTER__SERVER__SHUTDOWN_DELAY")
        .map_or(Duration::ZERO, |(_, v)| duration(v));
    let drain = longest_drain(&env);
    assert!(
        stop > delay + drain + KILL_GRACE,
        "TimeoutStopSec {stop:?} <= shutdown_delay {delay:?} + drain_timeout {drain:?} + \
         {KILL_GRACE:?}"
    );
}
