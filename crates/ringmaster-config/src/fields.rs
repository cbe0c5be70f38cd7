//! Serde helpers for integer and address fields whose default error messages
//! ("invalid type: string, expected usize") would not tell an operator what
//! to write. Each helper says what was expected and echoes what it got.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// Deserializes a non-negative integer into any unsigned type, e.g. `usize`.
/// Range checks beyond "fits the type" are left to validation.
pub(crate) fn uint<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    deserializer.deserialize_u64(UintVisitor(PhantomData))
}

/// Like [`uint`], for an optional field: present means `Some`.
/// (TOML has no null; absence is handled by `#[serde(default)]`.)
pub(crate) fn some_uint<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    uint(deserializer).map(Some)
}

/// Deserializes a socket address such as `"127.0.0.1:3000"` or `"[::1]:0"`.
pub(crate) fn socket_addr<'de, D>(deserializer: D) -> Result<SocketAddr, D::Error>
where
    D: Deserializer<'de>,
{
    deserializer.deserialize_str(SocketAddrVisitor)
}

/// Like [`socket_addr`], for an optional field: present means `Some`.
pub(crate) fn some_socket_addr<'de, D>(deserializer: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: Deserializer<'de>,
{
    socket_addr(deserializer).map(Some)
}

struct UintVisitor<T>(PhantomData<T>);

fn expected_uint<E: de::Error>(got: impl fmt::Display) -> E {
    E::custom(format!("expected a positive integer, got {got}"))
}

impl<T: TryFrom<u64>> Visitor<'_> for UintVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a positive integer")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| expected_uint(format_args!("{v}, which is too large")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(expected_uint(v)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Err(expected_uint(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        Err(expected_uint(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Err(expected_uint(format_args!("{v:?}")))
    }
}

struct SocketAddrVisitor;

impl Visitor<'_> for SocketAddrVisitor {
    type Value = SocketAddr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a socket address such as \"127.0.0.1:3000\" or \"[::1]:3000\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketAddr, E> {
        v.trim().parse().map_err(|_| {
            E::custom(format!(
                "expected a socket address such as \"127.0.0.1:3000\" or \"[::1]:3000\" \
                 (port 0 picks a free port), got {v:?}"
            ))
        })
    }
}
