//! Gunicorn's own HTTP parser corpus (`tests/data/gunicorn-requests/`, 63 valid and 74 invalid requests)
//! replayed against the real server running `sample:echo`: each file sent whole, one byte at a time, and in
//! random chunks (a fixed seed, so runs repeat). A valid file must give the guest the environ and body that
//! `expected.json` describes; an invalid one must be refused (a 4xx or 5xx, or a close when Gunicorn sends
//! nothing too) without the guest answering it. Where wasmcorn deliberately differs from Gunicorn, the
//! `DEVIATIONS` table says so, file by file, with the reason.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode;
use serde_json::Value;

use crate::support::{PATIENCE, Server, parse_response};

/// How wasmcorn deliberately differs from Gunicorn on a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deviation {
    /// Gunicorn accepts the request; wasmcorn refuses it with this status.
    Refused(u16),
    /// Both refuse the request; wasmcorn answers with this status rather than Gunicorn's.
    Status(u16),
    /// Gunicorn refuses the request only under a setting wasmcorn does not have (or reads `0` otherwise than its
    /// documentation); wasmcorn serves it.
    Served,
    /// Served, but the guest gets this PATH_INFO rather than what Gunicorn's parser reports.
    PathInfo(&'static str),
}

use Deviation::{PathInfo, Refused, Served, Status};

const NO_HOST: &str = "an HTTP/1.1 request without Host: RFC 9112 section 3.2 says a server MUST answer 400";
const UNKNOWN_CODING: &str = "a transfer coding other than chunked (gzip, or identity, which RFC 9112 removed): \
                              501, as RFC 9112 section 6.1 says, rather than handing the guest a body still encoded";
const PROXY_PROTOCOL: &str = "the PROXY protocol (Gunicorn's proxy_protocol setting) is not offered, so the \
                              PROXY line is a malformed request line";

/// Every file on which wasmcorn deliberately differs from Gunicorn 26.1, and why.
const DEVIATIONS: &[(&str, Deviation, &str)] = &[
    ("valid/004.http", Refused(400), NO_HOST),
    ("valid/005.http", Refused(400), NO_HOST),
    ("valid/006.http", Refused(400), NO_HOST),
    ("valid/007.http", Refused(400), NO_HOST),
    ("valid/009.http", Refused(400), NO_HOST),
    ("valid/010.http", Refused(400), NO_HOST),
    ("valid/011.http", Refused(400), NO_HOST),
    ("valid/012.http", Refused(400), NO_HOST),
    ("valid/013.http", Refused(400), NO_HOST),
    ("valid/014.http", Refused(400), NO_HOST),
    ("valid/018.http", Refused(400), NO_HOST),
    ("valid/021.http", Refused(400), NO_HOST),
    ("valid/023.http", Refused(400), NO_HOST),
    ("valid/031.http", Refused(400), NO_HOST),
    ("valid/100.http", Refused(400), NO_HOST),
    ("valid/025.http", Refused(501), UNKNOWN_CODING),
    ("valid/025_line.http", Refused(501), UNKNOWN_CODING),
    ("valid/029.http", Refused(501), UNKNOWN_CODING),
    ("valid/030.http", Refused(501), UNKNOWN_CODING),
    ("valid/rfc9112_smuggle_gzip_chunked_01.http", Refused(501), UNKNOWN_CODING),
    ("valid/rfc9112_smuggle_te_identity_chunked_01.http", Refused(501), UNKNOWN_CODING),
    (
        "valid/028.http",
        Refused(400),
        "whitespace between a field name and its colon: RFC 9112 section 5.1 says a server MUST answer 400 \
         (Gunicorn's strip_header_spaces is not offered)",
    ),
    (
        "valid/031compat.http",
        Refused(400),
        "no Host; and Gunicorn's permit_unconventional_http_method and casefold_http_method are not offered",
    ),
    ("valid/031compat2.http", Refused(400), "a lower-case method: Gunicorn refuses it too without its compat settings"),
    (
        "valid/compat_obs_fold.http",
        Refused(400),
        "obs-fold: RFC 9112 section 5.2 lets a server refuse it with 400 (permit_obsolete_folding is not offered)",
    ),
    ("valid/compat_obs_fold_huge.http", Refused(400), "obs-fold, as compat_obs_fold.http"),
    ("valid/pp_01.http", Refused(400), PROXY_PROTOCOL),
    ("valid/pp_02.http", Refused(400), PROXY_PROTOCOL),
    ("valid/pp_04.http", Refused(400), PROXY_PROTOCOL),
    ("valid/pp_05.http", Refused(400), PROXY_PROTOCOL),
    (
        "valid/099.http",
        Refused(400),
        "the body is 8599 bytes where Content-Length says 17914: an incomplete message, which Gunicorn's test \
         harness reads to the end of the file",
    ),
    (
        "valid/rfc9112_target_absolute_userinfo_01.http",
        Refused(400),
        "userinfo in the target: RFC 9110 section 4.2.4 says to treat it as an error",
    ),
    (
        "valid/027.http",
        Refused(400),
        "raw UTF-8 in the target (`/\\xc3\\xa0%20k`): RFC 9112's request-target is visible ASCII only, llhttp \
         refuses it, and a proxy in front may encode or decode it otherwise; percent-encoded (`/%C3%A0%20k`) it is \
         served",
    ),
    (
        "valid/rfc9112_target_authority_connect_01.http",
        PathInfo(""),
        "an authority-form target has no path; Gunicorn's urlsplit reads `example.com:443` as scheme and path `443`",
    ),
    ("valid/rfc9112_target_authority_ipv6_01.http", PathInfo(""), "an authority-form target has no path"),
    (
        "invalid/006.http",
        Status(414),
        "a request line over the limit: 414 URI Too Long, as RFC 9112 section 3 says, rather than 400",
    ),
    ("invalid/013.http", Status(400), "obs-fold is refused as such, before its length counts"),
    (
        "invalid/version_02.http",
        Status(505),
        "a well-formed HTTP/2.0 is 505 HTTP Version Not Supported (RFC 9110 15.6.6)",
    ),
    (
        "invalid/040.http",
        Served,
        "Gunicorn refuses underscores in field names only with header_map=refuse; by default both drop those \
         fields, as valid/040.http shows",
    ),
    (
        "invalid/limit_header_default_01.http",
        Served,
        "--limit-request-field_size 0 means no limit, as Gunicorn's documentation says (its code uses the default)",
    ),
];

/// The corpus, copied byte for byte from Gunicorn (MIT); see its README.
fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/gunicorn-requests")
}

/// One corpus file, ready to send.
struct Case {
    /// `valid/NAME.http` or `invalid/NAME.http`.
    name: String,
    wire: Vec<u8>,
    /// The server flags that Gunicorn's `cfg` for the file maps to, or `None` for a setting wasmcorn lacks.
    flags: Option<Vec<String>>,
    expected: Value,
}

impl Case {
    fn is_valid(&self) -> bool {
        self.name.starts_with("valid/")
    }

    fn deviation(&self) -> Option<Deviation> {
        DEVIATIONS.iter().find(|(name, _, _)| *name == self.name).map(|(_, deviation, _)| *deviation)
    }
}

/// Turns a `.http` file into wire bytes, as Gunicorn's `tests/treq.py` does (the corpus README's steps).
fn wire_bytes(text: &[u8]) -> Vec<u8> {
    let text: Vec<u8> = text.iter().copied().filter(|&byte| byte != b'\n').collect();
    let mut wire = Vec::with_capacity(text.len());
    let mut rest = text.as_slice();
    while let Some((&byte, after)) = rest.split_first() {
        if byte != b'\\' {
            wire.push(byte);
            rest = after;
            continue;
        }
        let (decoded, tail): (&[u8], &[u8]) = match after {
            [b'r', b'\\', b'n', tail @ ..] => (b"\r\n", tail),
            [b'0', tail @ ..] => (b"\0", tail),
            [b'n', tail @ ..] => (b"\n", tail),
            [b't', tail @ ..] => (b"\t", tail),
            [b'x', high, low, tail @ ..] => {
                let hex = std::str::from_utf8(&[*high, *low]).ok().and_then(|hex| u8::from_str_radix(hex, 16).ok());
                wire.push(hex.expect("\\xHH with two hex digits"));
                (b"", tail)
            }
            _ => panic!("a backslash that is no escape in a corpus file"),
        };
        wire.extend_from_slice(decoded);
        rest = tail;
    }
    wire
}

/// Gunicorn settings as wasmcorn flags; `None` when one of them has no wasmcorn equivalent.
fn flags_for(cfg: &Value) -> Option<Vec<String>> {
    let mut flags = Vec::new();
    for (setting, value) in cfg.as_object().expect("cfg is an object") {
        let flag = match setting.as_str() {
            "limit_request_line" => "--limit-request-line",
            "limit_request_fields" => "--limit-request-fields",
            "limit_request_field_size" => "--limit-request-field_size",
            "forwarded_allow_ips" => "--forwarded-allow-ips",
            _ => return None,
        };
        let value = match value {
            // Gunicorn clamps the request line limit to 8190; wasmcorn refuses more, so clamp here.
            Value::Number(number) if setting == "limit_request_line" => number.as_u64()?.min(8190).to_string(),
            Value::Number(number) => number.to_string(),
            Value::String(text) => text.clone(),
            _ => return None,
        };
        flags.extend([flag.to_string(), value]);
    }
    Some(flags)
}

fn load_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for folder in ["valid", "invalid"] {
        let dir = corpus_dir().join(folder);
        let expected: BTreeMap<String, Value> =
            serde_json::from_slice(&std::fs::read(dir.join("expected.json")).expect("read expected.json"))
                .expect("expected.json is JSON");
        for (file, expected) in expected {
            let text = std::fs::read(dir.join(&file)).unwrap_or_else(|err| panic!("read {folder}/{file}: {err}"));
            let flags = flags_for(&expected["cfg"]);
            cases.push(Case { name: format!("{folder}/{file}"), wire: wire_bytes(&text), flags, expected });
        }
    }
    assert_eq!(cases.len(), 137, "63 valid and 74 invalid files");
    for (name, _, _) in DEVIATIONS {
        assert!(cases.iter().any(|case| case.name == *name), "the deviation table names {name}, which is no file");
    }
    cases
}

/// How a request is cut into writes.
#[derive(Debug, Clone, Copy)]
enum Sending {
    Whole,
    ByteAtATime,
    RandomChunks { seed: u64 },
}

/// Sends `wire` as `sending` says, half-closes, and returns everything the server sent before it closed.
fn exchange(port: u16, wire: &[u8], sending: Sending, case_index: usize) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to wasmcorn");
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let pieces: Vec<&[u8]> = match sending {
        Sending::Whole => vec![wire],
        Sending::ByteAtATime => wire.chunks(1).collect(),
        Sending::RandomChunks { seed } => {
            let mut rng = fastrand::Rng::with_seed(seed + case_index as u64);
            let mut pieces = Vec::new();
            let mut rest = wire;
            while !rest.is_empty() {
                let (piece, tail) = rest.split_at(rng.usize(1..=rest.len().min(64)));
                pieces.push(piece);
                rest = tail;
            }
            pieces
        }
    };
    for piece in pieces {
        // The server may refuse the request and close before it is all sent: then read what it answered.
        if stream.write_all(piece).is_err() {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    let mut raw = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(count) => raw.extend_from_slice(&buffer[..count]),
        }
    }
    raw
}

/// The bytes a corpus string stands for (`expected.json` holds their Latin-1 decoding).
fn latin1_bytes(text: &str) -> Vec<u8> {
    text.chars().map(|ch| u8::try_from(u32::from(ch)).expect("a Latin-1 character")).collect()
}

/// What the echo guest must have been given for the first request of a valid file; returns the differences.
fn environ_differences(expected: &Value, json: &Value) -> Vec<String> {
    let environ = &json["environ"];
    let uri = &expected["uri"];
    let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
    let mut wanted: Vec<(String, String)> = vec![
        ("REQUEST_METHOD".into(), text(&expected["method"])),
        ("RAW_URI".into(), String::from_utf8_lossy(&latin1_bytes(&text(&uri["raw"]))).into_owned()),
        ("PATH_INFO".into(), percent_decode(&latin1_bytes(&text(&uri["path"]))).decode_utf8_lossy().into_owned()),
        ("QUERY_STRING".into(), text(&uri["query"])),
        ("SERVER_PROTOCOL".into(), format!("HTTP/{}.{}", expected["version"][0], expected["version"][1])),
    ];
    let mut headers: Vec<(String, String)> = Vec::new();
    for header in expected["headers"].as_array().expect("headers") {
        let (name, value) = (text(&header[0]), text(&header[1]));
        if name.contains('_') {
            continue;
        }
        let key = match name.as_str() {
            "CONTENT-TYPE" | "CONTENT-LENGTH" => name.replace('-', "_"),
            _ => format!("HTTP_{}", name.replace('-', "_")),
        };
        match headers.iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            None => headers.push((key, value)),
        }
    }
    let mut differences = Vec::new();
    let given_http: Vec<&String> =
        environ.as_object().expect("environ").keys().filter(|key| key.starts_with("HTTP_")).collect();
    for key in given_http {
        if !headers.iter().any(|(name, _)| name == key) {
            differences.push(format!("unexpected {key}"));
        }
    }
    wanted.extend(headers);
    for (key, value) in wanted {
        if environ[&key] != Value::String(value.clone()) {
            differences.push(format!("{key}: expected {value:?}, the guest got {}", environ[&key]));
        }
    }
    let body = latin1_bytes(&text(&expected["body_latin1"]));
    if json["body_length"] != body.len() || json["body"] != String::from_utf8_lossy(&body).as_ref() {
        differences.push(format!("body: expected {} bytes, the guest got {}", body.len(), json["body_length"]));
    }
    differences
}

/// Checks one response against the file's expectation; returns what is wrong, if anything.
fn check(case: &Case, raw: &[u8]) -> Option<String> {
    // A response that keeps the connection alive is followed by the answer to the request pipelined behind it
    // (valid/022.http, whose second request, without Host, gets 400): the file's expectation is about the first.
    let raw = kept_alive_first(raw).unwrap_or(raw);
    let status = (!raw.is_empty()).then(|| parse_response(raw));
    let responses = raw.windows(9).filter(|window| window.starts_with(b"HTTP/1.1 ")).count();
    if responses > 1 {
        return Some(format!("{responses} responses on one connection"));
    }
    match (case.is_valid(), case.deviation(), status) {
        (true, None | Some(PathInfo(_)), Some(response)) if response.status == 200 => {
            let mut expected = case.expected["requests"][0].clone();
            if let Some(PathInfo(path)) = case.deviation() {
                expected["uri"]["path"] = Value::String(path.into());
            }
            let differences = environ_differences(&expected, &response.json());
            (!differences.is_empty()).then(|| differences.join("; "))
        }
        (_, Some(Refused(expected) | Status(expected)), Some(response)) if response.status == expected => None,
        (false, None, Some(response)) => {
            let gunicorn = case.expected["http_status_in_server"].as_str().unwrap_or_default();
            let gunicorn_status: Option<u16> = gunicorn.split(' ').next().and_then(|code| code.parse().ok());
            match gunicorn_status {
                Some(expected) if expected == response.status => None,
                // Gunicorn sends nothing, or a status only when the app reads the body: any refusal will do.
                None if response.status >= 400 => None,
                _ => Some(format!("status {} where Gunicorn answers {gunicorn:?}", response.status)),
            }
        }
        (false, Some(Served), Some(response)) if response.status == 200 => None,
        (_, deviation, Some(response)) => {
            Some(format!("status {} (deviation {deviation:?}): {}", response.status, response.text()))
        }
        (false, None, None)
            if case.expected["http_status_in_server"].as_str().is_some_and(|text| text.starts_with("no response")) =>
        {
            None
        }
        (_, deviation, None) => Some(format!("no response (deviation {deviation:?})")),
    }
}

/// The first response in `raw`, when it says `Connection: keep-alive` and has a Content-Length.
fn kept_alive_first(raw: &[u8]) -> Option<&[u8]> {
    let head_end = raw.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    if !head.contains("\r\nconnection: keep-alive\r\n") {
        return None;
    }
    let length: usize = head.split("\r\ncontent-length: ").nth(1)?.split("\r\n").next()?.parse().ok()?;
    raw.get(..head_end + length)
}

/// Replays the whole corpus in one way of sending, against one server per distinct set of flags.
fn replay(sending: Sending) {
    let cases = load_cases();
    let mut servers: BTreeMap<Vec<String>, Server> = BTreeMap::new();
    let mut failures = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let flags = case.flags.clone().unwrap_or_default();
        let server = servers.entry(flags.clone()).or_insert_with(|| {
            let args: Vec<&str> = flags.iter().map(String::as_str).collect();
            Server::start("sample:echo", 2, &args)
        });
        let raw = exchange(server.port, &case.wire, sending, index);
        if let Some(problem) = check(case, &raw) {
            failures.push(format!("{}: {problem}", case.name));
        }
    }
    assert!(failures.is_empty(), "{} of 137 files failed ({sending:?}):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn gunicorn_corpus_sent_whole() {
    replay(Sending::Whole);
}

#[test]
fn gunicorn_corpus_sent_one_byte_at_a_time() {
    replay(Sending::ByteAtATime);
}

#[test]
fn gunicorn_corpus_sent_in_random_chunks() {
    replay(Sending::RandomChunks { seed: 0x5eed });
}
