//! The corpus of broken configurations (issue 11): each one, given to the
//! real binary's `serve`, must stop it with exit 78 and a message that
//! names the file (or the environment variable), the key, and what was
//! expected; no worker starts.

mod support;

use std::process::Command;
use std::time::Duration;

/// One broken configuration: its name, the file, environment overrides,
/// and the fragments the error must contain besides the file's path
/// (the key first).
struct Case {
    name: &'static str,
    file: &'static str,
    env: &'static [(&'static str, &'static str)],
    says: &'static [&'static str],
}

const W: &str = "[groups.web]\nlisten = \"127.0.0.1:0\"\n";

fn corpus() -> Vec<Case> {
    let c = |name, file, says| Case {
        name,
        file,
        env: &[],
        says,
    };
    vec![
        // Unknown keys and sections, typos.
        c(
            "unknown key",
            "[groups.web]\ncout = 2\n",
            &["cout", "unknown field", "expected one of", "`count`"],
        ),
        c(
            "unknown section",
            "[sever]\nlog_file = \"a.log\"\n",
            &["sever", "expected one of", "`server`"],
        ),
        c(
            "typo in a section",
            "[group.web]\ncount = 2\n",
            &["group", "expected one of", "`groups`"],
        ),
        c(
            "unknown backend key",
            "[backends.main]\nurl = \"sqlite://main.db\"\npoolsize = 4\n",
            &["backends.main.poolsize", "`pool_size`"],
        ),
        // Wrong types.
        c(
            "count is a string",
            "[groups.web]\ncount = \"two\"\n",
            &["groups.web.count", "expected a positive integer", "\"two\""],
        ),
        c(
            "count is negative",
            "[groups.web]\ncount = -1\n",
            &["groups.web.count", "expected a positive integer"],
        ),
        c(
            "listen is a number",
            "[groups.web]\nlisten = 8080\n",
            &["groups.web.listen", "expected a socket address"],
        ),
        c(
            "dev is a string",
            "[server]\ndev = \"yes\"\n",
            &["server.dev", "expected a boolean"],
        ),
        c(
            "max_rss in words",
            "[groups.web]\nmax_rss = \"lots\"\n",
            &["groups.web.max_rss", "expected a positive integer"],
        ),
        c(
            "duration as a bare number",
            "[groups.web]\ndrain_timeout = 30\n",
            &["groups.web.drain_timeout", "add a unit"],
        ),
        // Out of range.
        c(
            "count 0",
            "[groups.web]\ncount = 0\n",
            &["groups.web.count", "from 1 to 1024", "got 0"],
        ),
        c(
            "count 100000",
            "[groups.web]\ncount = 100000\n",
            &["groups.web.count", "from 1 to 1024"],
        ),
        c(
            "absurd threads",
            "[groups.web]\nthreads = 100000\n",
            &["groups.web.threads", "from 1 to 1024"],
        ),
        c(
            "threads 0",
            "[groups.web]\nthreads = 0\n",
            &["groups.web.threads", "from 1 to 1024"],
        ),
        c(
            "pool_size 0",
            "[backends.main]\nurl = \"sqlite://main.db\"\npool_size = 0\n",
            &["backends.main.pool_size", "from 1 to 1024"],
        ),
        c(
            "pool_size 5000",
            "[backends.main]\nurl = \"sqlite://main.db\"\npool_size = 5000\n",
            &["backends.main.pool_size", "from 1 to 1024"],
        ),
        c(
            "tiny max_header_bytes",
            "[groups.web]\nmax_header_bytes = 10\n",
            &["groups.web.max_header_bytes", "from 1024"],
        ),
        c(
            "max_connections 0",
            "[groups.web]\nmax_connections = 0\n",
            &["groups.web.max_connections", "from 1"],
        ),
        c(
            "heartbeat too fast",
            "[groups.web]\nheartbeat_interval = \"1ms\"\n",
            &["groups.web.heartbeat_interval", "at least 10ms"],
        ),
        c(
            "heartbeat timeout below its interval",
            "[groups.web]\nheartbeat_interval = \"2s\"\nheartbeat_timeout = \"1s\"\n",
            &[
                "groups.web.heartbeat_timeout",
                "longer than heartbeat_interval",
            ],
        ),
        // Bad durations.
        c(
            "duration in words",
            "[groups.web]\ndrain_timeout = \"soon\"\n",
            &[
                "groups.web.drain_timeout",
                "invalid duration \"soon\"",
                "e.g. \"30s\"",
            ],
        ),
        c(
            "duration in days",
            "[groups.web]\ndrain_timeout = \"40d\"\n",
            &["groups.web.drain_timeout", "invalid duration \"40d\""],
        ),
        c(
            "keepalive in words",
            "[groups.web]\nkeepalive_timeout = \"abc\"\n",
            &["groups.web.keepalive_timeout", "invalid duration"],
        ),
        // Bad addresses.
        c(
            "listen without a port",
            "[groups.web]\nlisten = \"127.0.0.1\"\n",
            &[
                "groups.web.listen",
                "expected a socket address",
                "\"127.0.0.1\"",
            ],
        ),
        c(
            "listen on no such IP",
            "[groups.web]\nlisten = \"999.0.0.1:80\"\n",
            &["groups.web.listen", "expected a socket address"],
        ),
        c(
            "listen port out of range",
            "[groups.web]\nlisten = \"127.0.0.1:99999\"\n",
            &["groups.web.listen", "expected a socket address"],
        ),
        c(
            "unknown listen_mode",
            "[groups.web]\nlisten_mode = \"fast\"\n",
            &["groups.web.listen_mode", "expected `shared` or `reuseport`"],
        ),
        c(
            "two groups on one port",
            "[groups.web]\nlisten = \"127.0.0.1:18555\"\n[groups.api]\nlisten = \"127.0.0.1:18555\"\n",
            &["groups.api.listen", "both listen on 127.0.0.1:18555"],
        ),
        // Workers and names.
        c(
            "unregistered worker",
            "[groups.web]\nworker = \"nope\"\n",
            &[
                "groups.web.worker",
                "not a worker this binary knows",
                "known: web, api",
            ],
        ),
        c(
            "group name with capitals",
            "[groups.Web]\nlisten = \"127.0.0.1:0\"\n",
            &["groups.Web", "lowercase letters"],
        ),
        c(
            "backend name with capitals",
            "[backends.Main]\nurl = \"sqlite://main.db\"\n",
            &["backends.Main", "lowercase letters"],
        ),
        c(
            "an empty [groups]",
            "[groups]\n",
            &["groups", "defines no group", "[groups.web]"],
        ),
        // Bad backend URLs.
        c(
            "unsupported scheme",
            "[backends.main]\nurl = \"mysql://h/db\"\n",
            &[
                "backends.main.url",
                "unsupported scheme \"mysql\"",
                "sqlite://, postgres:// or redis://",
            ],
        ),
        c(
            "port that is not a number",
            "[backends.main]\nurl = \"postgres://h:notaport/db\"\n",
            &["backends.main.url", "\"notaport\"", "not a number"],
        ),
        c(
            "not a URL",
            "[backends.main]\nurl = \"not a url\"\n",
            &["backends.main.url", "missing scheme"],
        ),
        // Paths: missing directories, too long, not files.
        c(
            "log file where no directory can be made",
            "[server]\nlog_file = \"/proc/ringmaster-none/app.log\"\n",
            &["server.log_file", "/proc/ringmaster-none/app.log"],
        ),
        c(
            "log file that is a directory",
            "[server]\nlog_file = \"/tmp\"\n",
            &["server.log_file", "it is a directory"],
        ),
        c(
            "pid file where none can be written",
            "[server]\npid_file = \"/proc/ringmaster.pid\"\n",
            &["server.pid_file", "point pid_file at a writable place"],
        ),
        c(
            "control socket where no directory can be made",
            "[server]\ncontrol_socket = \"/proc/ringmaster-none/ctl.sock\"\n",
            &["server.control_socket", "/proc/ringmaster-none"],
        ),
        c(
            "socket path too long",
            "[server]\ncontrol_socket = \"/tmp/ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss.sock\"\n",
            &["server.control_socket", "at most 107 bytes"],
        ),
        c(
            "unknown log format",
            "[server]\nlog_format = \"xml\"\n",
            &["server.log_format", "expected `text` or `json`"],
        ),
        // Invalid TOML.
        c(
            "unclosed section",
            "[groups.web\ncount = 2\n",
            &["groups.web", "unclosed table", "line 1"],
        ),
        c(
            "key without a value",
            "[groups.web]\ncount = \n",
            &["count =", "line 2"],
        ),
        c(
            "duplicate key",
            "[groups.web]\ncount = 1\ncount = 2\n",
            &["duplicate key `count`"],
        ),
        c(
            "string not closed",
            "[groups.web]\nlisten = \"127.0.0.1:0\n",
            &["listen", "line 2"],
        ),
        // Environment overrides.
        Case {
            name: "override of the wrong type",
            file: W,
            env: &[("RINGMASTER__GROUPS__WEB__COUNT", "abc")],
            says: &["groups.web.count", "expected a positive integer"],
        },
        Case {
            name: "override of an unknown key",
            file: W,
            env: &[("RINGMASTER__GROUPS__WEB__CUONT", "2")],
            says: &["cuont", "unknown field", "`count`"],
        },
        Case {
            name: "override with a bad duration",
            file: W,
            env: &[("RINGMASTER__GROUPS__WEB__DRAIN_TIMEOUT", "soon")],
            says: &["groups.web.drain_timeout", "invalid duration"],
        },
    ]
}

#[test]
fn every_broken_configuration_exits_78_naming_the_file_the_key_and_the_expectation() {
    let corpus = corpus();
    assert!(corpus.len() >= 40, "the corpus has {} cases", corpus.len());
    let mut wrong = Vec::new();
    for case in &corpus {
        let dir = support::scratch_dir();
        let path = dir.join("ringmaster.toml");
        std::fs::write(&path, case.file).unwrap();
        let mut cmd = Command::new(support::demo_exe());
        cmd.arg("serve")
            .arg("--config")
            .arg(&path)
            .current_dir(&dir)
            .envs(case.env.iter().copied());
        let out = support::output_within(cmd, Duration::from_secs(10));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The file, or for an override the variable, is named.
        let origin = match case.env.first() {
            Some((var, _)) => var.to_string(),
            None => path.display().to_string(),
        };
        let missing: Vec<&str> = std::iter::once(origin.as_str())
            .chain(case.says.iter().copied())
            .filter(|s| !text.contains(s))
            .collect();
        if out.status.code() != Some(78) || !missing.is_empty() || text.contains("worker spawned") {
            wrong.push(format!(
                "{}: exit {:?}, missing {missing:?}\n{text}",
                case.name,
                out.status.code()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases:\n\n{}",
        wrong.len(),
        corpus.len(),
        wrong.join("\n\n")
    );
}
