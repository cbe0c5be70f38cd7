//! The proptest version of the fuzz target `http_head` (`fuzz/`): random
//! bytes and near-valid requests through the worker's connection loop.

use proptest::prelude::*;
use ringmaster_worker::fuzzing::http_head;

/// A request that is almost right: methods, targets, versions, headers
/// and bodies, valid and not.
fn near_request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("HEAD"),
        Just("OPTIONS"),
        Just("G\x01T"),
        Just(""),
    ];
    let target = prop_oneof![
        Just("/".to_string()),
        Just("/echo".to_string()),
        "/[a-z%0-9?=&/.]{0,40}",
        Just("*".to_string()),
        Just("http://a/echo".to_string()),
        "/x{9000}",
    ];
    let version = prop_oneof![
        Just("HTTP/1.1"),
        Just("HTTP/1.0"),
        Just("HTTP/2.0"),
        Just("HTTP/1.1 x"),
        Just(""),
    ];
    let header = prop_oneof![
        Just("Host: a".to_string()),
        Just("Host: b".to_string()),
        "Content-Length: -?[0-9]{1,21}",
        Just("Transfer-Encoding: chunked".to_string()),
        Just("Transfer-Encoding: gzip, chunked".to_string()),
        Just("Connection: close".to_string()),
        Just("Expect: 100-continue".to_string()),
        Just("Accept-Encoding: gzip".to_string()),
        Just("Upgrade: websocket".to_string()),
        "X-[A-Za-z]{1,10}: [ -~]{0,30}",
        Just("Bad Header".to_string()),
        Just(" folded".to_string()),
        "X-Big: a{100,20000}",
    ];
    let body = prop_oneof![
        Just(String::new()),
        "[a-z]{0,20}",
        Just("3\r\nabc\r\n0\r\n\r\n".to_string()),
        Just("ffffffffffffffff\r\nabc".to_string()),
        Just("0\r\n\r\n".to_string()),
    ];
    let one = (
        method,
        target,
        version,
        prop::collection::vec(header, 0..6),
        body,
    )
        .prop_map(|(m, t, v, headers, body)| {
            let mut r = format!("{m} {t} {v}\r\n");
            for h in headers {
                r.push_str(&h);
                r.push_str("\r\n");
            }
            r.push_str("\r\n");
            r.push_str(&body);
            r
        });
    prop::collection::vec(one, 1..4).prop_map(|rs| rs.concat().into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_bytes_get_a_status_line_or_nothing(
        bytes in prop::collection::vec(any::<u8>(), 0..3000),
        step in 1usize..400,
    ) {
        http_head(&bytes, step);
    }

    #[test]
    fn near_requests_get_a_status_line_or_nothing(input in near_request(), step in 1usize..400) {
        http_head(&input, step);
    }
}

#[test]
fn a_valid_request_is_answered_and_a_bad_one_refused() {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let ok = http_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 3);
    assert!(ok.starts_with(b"HTTP/1.1 200"), "{}", text(&ok));
    let two_hosts = http_head(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 100);
    assert!(
        two_hosts.starts_with(b"HTTP/1.1 400"),
        "{}",
        text(&two_hosts)
    );
    let echo = http_head(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        2,
    );
    assert!(text(&echo).ends_with("hello"), "{}", text(&echo));
}
