//! Entry point for the fuzz target `config` in `fuzz/` and its proptest
//! version: a configuration file and environment overrides, as `serve`
//! and `check` read them. Not a stable API.

use crate::Config;

/// The origin errors name.
const ORIGIN: &str = "fuzz.toml";

/// Reads `input` as a configuration: the text up to the first NUL byte is
/// the file, each line after it `KEY=VALUE` the environment variable
/// `RINGMASTER__KEY`. Panics on a broken invariant: an error that names
/// neither the file nor the variable, or a configuration accepted that does
/// not survive the trip through TOML that hands it to the workers.
///
/// ```
/// ringmaster_config::fuzzing::config(b"[groups.web]\ncount = 2\n\0GROUPS__WEB__THREADS=2");
/// ```
pub fn config(input: &[u8]) {
    let (file, env) = match input.iter().position(|b| *b == 0) {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, &[][..]),
    };
    let text = String::from_utf8_lossy(file);
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("RINGMASTER__{k}"), v.to_string()))
        .collect();
    match Config::load_str(&text, ORIGIN, env) {
        Ok(config) => {
            let toml = config
                .to_toml_string()
                .unwrap_or_else(|e| panic!("an accepted configuration cannot be written: {e}"));
            let back = Config::from_toml_str(&toml, "handoff")
                .unwrap_or_else(|e| panic!("the handoff does not read back: {e}\n{toml}"));
            assert_eq!(
                back, config,
                "the handoff changed the configuration:\n{toml}"
            );
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with(ORIGIN)
                    || message.starts_with("environment variable RINGMASTER__"),
                "an error that names neither the file nor the variable: {message}"
            );
        }
    }
}
