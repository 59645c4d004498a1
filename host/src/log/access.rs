//! The access-log line: Gunicorn's `%(atom)s` format language, or one JSON object per request. Client-controlled
//! text is escaped so that nobody can forge a log line.

use std::fmt::Write;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::bail;

use super::prefix;

/// Gunicorn's default `access_log_format`.
pub(super) const GUNICORN_DEFAULT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;
/// The default when the server hosts many apps (`--apps`): Gunicorn's, led by the app's name, as Apache's
/// `vhost_combined` leads with the virtual host.
pub(super) const HOSTED_DEFAULT: &str = r#"%(app)s %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// The room a line is given at first: a default-format line with a browser's user agent fits.
const LINE_CAPACITY: usize = 256;

/// What the access log says about one request.
pub(crate) struct AccessRecord<'a> {
    /// The app that answered (empty without a manifest; `-` when no app did).
    pub app: &'a str,
    /// The client's address: `-` in the line when it has none (a unix-socket client).
    pub remote_addr: Option<IpAddr>,
    pub method: &'a str,
    /// The request target exactly as sent.
    pub target: &'a str,
    /// The path of the target, as sent.
    pub path: &'a str,
    pub query: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    /// Body bytes sent.
    pub body_bytes: u64,
    pub request_headers: &'a [(String, String)],
    /// As the guest set them: values are the bytes that went on the wire.
    pub response_headers: &'a [(String, Vec<u8>)],
    /// From the end of the request head to the end of the response.
    pub duration: Duration,
}

impl AccessRecord<'_> {
    fn request_line(&self) -> String {
        format!("{} {} {}", self.method, self.target, self.protocol)
    }

    fn request_header(&self, name: &str) -> Option<&str> {
        find(self.request_headers, name).map(String::as_str)
    }
}

/// The value of the first header named `name` (in any case).
fn find<'a, V>(headers: &'a [(String, V)], name: &str) -> Option<&'a V> {
    headers.iter().find(|(field, _)| field.eq_ignore_ascii_case(name)).map(|(_, value)| value)
}

/// A parsed access-log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AccessFormat {
    Atoms(Vec<Piece>),
    Json,
}

/// A piece of an atom format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    Atom(Atom),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Atom {
    /// A one-letter atom such as `h` or `s`.
    Letter(char),
    RequestHeader(String),
    ResponseHeader(String),
    Environment(String),
    /// `%(app)s`: the name of the hosted app that answered.
    App,
}

impl Default for AccessFormat {
    fn default() -> Self {
        AccessFormat::parse(GUNICORN_DEFAULT).unwrap_or(AccessFormat::Json)
    }
}

/// The one-letter atoms Gunicorn documents.
const LETTERS: &str = "hlutrmUqHsBbfaTMDLp";

impl AccessFormat {
    pub(crate) fn parse(format: &str) -> anyhow::Result<AccessFormat> {
        if format == "json" {
            return Ok(AccessFormat::Json);
        }
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = format;
        while let Some(start) = rest.find('%') {
            text.push_str(&rest[..start]);
            rest = &rest[start..];
            if let Some(after) = rest.strip_prefix("%%") {
                text.push('%');
                rest = after;
                continue;
            }
            let Some(end) = rest.find(")s").filter(|_| rest.starts_with("%(")) else {
                bail!("--access-logformat: expected %(atom)s at {rest:?}");
            };
            let name = &rest[2..end];
            let atom = parse_atom(name)?;
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Atom(atom));
            rest = &rest[end + 2..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(AccessFormat::Atoms(pieces))
    }

    /// The line for `record`, newline included.
    pub(crate) fn render(&self, record: &AccessRecord<'_>) -> String {
        match self {
            AccessFormat::Json => json_line(record),
            AccessFormat::Atoms(pieces) => {
                // One buffer for the whole line: no atom makes a `String` of its own.
                let mut line = String::with_capacity(LINE_CAPACITY);
                for piece in pieces {
                    match piece {
                        Piece::Text(text) => line.push_str(text),
                        Piece::Atom(atom) => push_value(&mut line, atom, record),
                    }
                }
                line.push('\n');
                line
            }
        }
    }
}

fn parse_atom(name: &str) -> anyhow::Result<Atom> {
    if name == "app" {
        return Ok(Atom::App);
    }
    if let Some((header, kind)) = name.strip_prefix('{').and_then(|inner| inner.rsplit_once('}')) {
        return match kind {
            "i" => Ok(Atom::RequestHeader(header.to_string())),
            "o" => Ok(Atom::ResponseHeader(header.to_string())),
            "e" => Ok(Atom::Environment(header.to_string())),
            _ => bail!("--access-logformat: unknown atom %({name})s"),
        };
    }
    let mut characters = name.chars();
    match (characters.next(), characters.next()) {
        (Some(letter), None) if LETTERS.contains(letter) => Ok(Atom::Letter(letter)),
        _ => bail!("--access-logformat: unknown atom %({name})s"),
    }
}

/// Appends the value of `atom` for `record` to `line`. Writing to a `String` cannot fail: `write!`'s result is
/// ignored.
fn push_value(line: &mut String, atom: &Atom, record: &AccessRecord<'_>) {
    let or_dash = |line: &mut String, text: Option<&str>| escape_into(line, text.unwrap_or("-"));
    match atom {
        Atom::RequestHeader(name) => or_dash(line, record.request_header(name)),
        // Its bytes read as UTF-8: a byte that is not becomes U+FFFD.
        Atom::ResponseHeader(name) => {
            or_dash(line, find(record.response_headers, name).map(|value| String::from_utf8_lossy(value)).as_deref())
        }
        Atom::Environment(name) => or_dash(line, std::env::var(name).ok().as_deref()),
        Atom::App => or_dash(line, Some(record.app).filter(|name| !name.is_empty())),
        Atom::Letter(letter) => match letter {
            'h' => _ = write!(line, "{}", ShownAddress(record.remote_addr)),
            't' => crate::clock::push_log_time(line),
            'r' => {
                // Escaped part by part: the spaces between the parts need no escape.
                escape_into(line, record.method);
                line.push(' ');
                escape_into(line, record.target);
                line.push(' ');
                escape_into(line, record.protocol);
            }
            'm' => escape_into(line, record.method),
            'U' => escape_into(line, record.path),
            'q' => escape_into(line, record.query),
            'H' => line.push_str(record.protocol),
            's' => _ = write!(line, "{}", record.status),
            'b' if record.body_bytes == 0 => line.push('-'),
            'B' | 'b' => _ = write!(line, "{}", record.body_bytes),
            'f' => or_dash(line, record.request_header("referer")),
            'a' => or_dash(line, record.request_header("user-agent")),
            'T' => _ = write!(line, "{}", record.duration.as_secs()),
            'M' => _ = write!(line, "{}", record.duration.as_millis()),
            'D' => _ = write!(line, "{}", record.duration.as_micros()),
            'L' => _ = write!(line, "{:.6}", record.duration.as_secs_f64()),
            'p' => _ = write!(line, "<{}>", std::process::id()),
            // 'l', 'u' and any other.
            _ => line.push('-'),
        },
    }
}

/// Appends `text` to `line`, kept from forging log lines: quotes and backslashes are escaped, and so is whatever
/// `log::breaks_out` (control bytes as `\xNN`, as Gunicorn does; separators and invisible format characters such
/// as U+202E as `\u{202e}`). The runs of characters between those are copied whole.
fn escape_into(line: &mut String, text: &str) {
    let mut rest = text;
    while let Some((at, character)) = rest.char_indices().find(|&(_, c)| needs_escape(c)) {
        line.push_str(&rest[..at]);
        match character {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            c if c.is_control() => _ = write!(line, "\\x{:02x}", u32::from(c)),
            c => _ = write!(line, "\\u{{{:x}}}", u32::from(c)),
        }
        rest = &rest[at + character.len_utf8()..];
    }
    line.push_str(rest);
}

fn needs_escape(c: char) -> bool {
    matches!(c, '"' | '\\') || super::breaks_out(c)
}

/// How short a client's value may get in a JSON line cut to fit (see `json_line`).
const SHORTEST_CUT: usize = 32;

/// `record` as one JSON object, newline included, at most `RECORD_MAX` bytes: while it would be longer, the longest
/// of the values the client chose (the request line, path, query, referer, user agent) is cut to half of what it
/// keeps, and says how many bytes it lost, so that the line stays one whole object with every key (the log's own
/// cut at `RECORD_MAX` would leave neither).
fn json_line(record: &AccessRecord<'_>) -> String {
    let request = record.request_line();
    let mut values = [
        Some(Cuttable::new(&request)),
        Some(Cuttable::new(record.path)),
        Some(Cuttable::new(record.query)),
        record.request_header("referer").map(Cuttable::new),
        record.request_header("user-agent").map(Cuttable::new),
    ];
    let time = chrono::Local::now().to_rfc3339();
    loop {
        let [request, path, query, referer, user_agent] = values.map(|value| value.map(Cuttable::shown));
        let object = serde_json::json!({
            "app": record.app,
            "remote_addr": ShownAddress(record.remote_addr).to_string(),
            "time": time,
            "request": request,
            "method": record.method,
            "path": path,
            "query": query,
            "protocol": record.protocol,
            "status": record.status,
            "bytes": record.body_bytes,
            "referer": referer,
            "user_agent": user_agent,
            "duration_us": u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX),
            "pid": std::process::id(),
        });
        let line = format!("{}\n", escape_json(&object.to_string()));
        if line.len() <= super::RECORD_MAX {
            return line;
        }
        match values.iter_mut().flatten().max_by_key(|value| value.kept) {
            Some(longest) if longest.kept > SHORTEST_CUT => longest.kept = prefix(longest.text, longest.kept / 2).len(),
            _ => return line,
        }
    }
}

/// A value of a JSON access-log line that may be cut: its text and how many bytes of it are shown.
#[derive(Clone, Copy)]
struct Cuttable<'a> {
    text: &'a str,
    kept: usize,
}

impl<'a> Cuttable<'a> {
    fn new(text: &'a str) -> Self {
        Cuttable { text, kept: text.len() }
    }

    fn shown(self) -> std::borrow::Cow<'a, str> {
        if self.kept >= self.text.len() {
            return std::borrow::Cow::Borrowed(self.text);
        }
        let cut = self.text.len() - self.kept;
        std::borrow::Cow::Owned(format!("{}...[{cut} bytes cut]", prefix(self.text, self.kept)))
    }
}

/// The client's address as both line formats show it: `-` when it has none (a unix-socket client).
struct ShownAddress(Option<IpAddr>);

impl std::fmt::Display for ShownAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(address) => address.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// A JSON line with what `log::breaks_out` written as `\uXXXX` escapes (serde_json escapes only the C0 controls,
/// `"` and `\`): C1 controls, separators and invisible format characters from a client's header stay visible.
fn escape_json(json: &str) -> String {
    let mut escaped = String::with_capacity(json.len());
    for character in json.chars() {
        if super::breaks_out(character) {
            for unit in character.encode_utf16(&mut [0; 2]) {
                escaped.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            escaped.push(character);
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(headers: &'a [(String, String)], response: &'a [(String, Vec<u8>)]) -> AccessRecord<'a> {
        AccessRecord {
            app: "shop",
            remote_addr: Some(IpAddr::from([10, 1, 2, 3])),
            method: "GET",
            target: "/p?a=1",
            path: "/p",
            query: "a=1",
            protocol: "HTTP/1.1",
            status: 200,
            body_bytes: 0,
            request_headers: headers,
            response_headers: response,
            duration: Duration::from_micros(1500),
        }
    }

    #[test]
    fn default_format_matches_gunicorn() {
        let headers = vec![("User-Agent".to_string(), "ua \"x\"\n".to_string())];
        let line = AccessFormat::default().render(&record(&headers, &[]));
        let (start, rest) = line.split_once(" [").unwrap();
        assert_eq!(start, "10.1.2.3 - -");
        assert!(rest.ends_with("] \"GET /p?a=1 HTTP/1.1\" 200 - \"-\" \"ua \\\"x\\\"\\x0a\"\n"), "{rest}");
    }

    #[test]
    fn hosted_default_leads_with_the_app() {
        let line = AccessFormat::parse(HOSTED_DEFAULT).unwrap().render(&record(&[], &[]));
        assert!(line.starts_with("shop 10.1.2.3 - - ["), "{line}");
    }

    #[test]
    fn invisible_and_line_breaking_characters_are_escaped() {
        let response = vec![("X-A".to_string(), "a\u{202e}b\u{2028}c\u{85}d".as_bytes().to_vec())];
        let format = AccessFormat::parse("%({x-a}o)s").unwrap();
        assert_eq!(format.render(&record(&[], &response)), "a\\u{202e}b\\u{2028}c\\x85d\n");
        let headers = vec![("User-Agent".to_string(), "ua\u{85}\u{9b}x".to_string())];
        let line = AccessFormat::Json.render(&record(&headers, &[]));
        assert!(line.contains(r#""user_agent":"ua\u0085\u009bx""#), "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["user_agent"], "ua\u{85}\u{9b}x");
    }

    #[test]
    fn the_request_line_is_escaped_in_each_part() {
        let mut record = record(&[], &[]);
        record.target = "/a\"b\\c\u{1b}[2J\u{2028}d";
        let format = AccessFormat::parse("%(r)s|%(U)s").unwrap();
        assert_eq!(format.render(&record), "GET /a\\\"b\\\\c\\x1b[2J\\u{2028}d HTTP/1.1|/p\n");
    }

    #[test]
    fn every_atom_renders() {
        let headers = vec![("X-Id".to_string(), "42".to_string())];
        let response = vec![("Content-Type".to_string(), b"text/plain".to_vec())];
        let format = AccessFormat::parse(
            "%(m)s %(U)s %(q)s %(H)s %(B)s %(D)s %(M)s %({x-id}i)s %({content-type}o)s %(app)s 100%%",
        )
        .unwrap();
        assert_eq!(
            format.render(&record(&headers, &response)),
            "GET /p a=1 HTTP/1.1 0 1500 1 42 text/plain shop 100%\n"
        );
        // The duration in whole seconds and with microseconds; the worker's environment variables.
        let format = AccessFormat::parse("%(T)s %(L)s %({PATH}e)s %({WASMCORN_NO_SUCH_VARIABLE}e)s").unwrap();
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(format.render(&record(&headers, &response)), format!("0 0.001500 {path} -\n"));
    }

    #[test]
    fn unknown_atoms_are_errors() {
        assert!(AccessFormat::parse("%(z)s").is_err());
        assert!(AccessFormat::parse("%(h)").is_err());
        assert!(AccessFormat::parse("%({x}z)s").is_err());
    }

    #[test]
    fn json_format_escapes_values() {
        let headers = vec![("Referer".to_string(), "a\"b\u{1}".to_string())];
        let line = AccessFormat::Json.render(&record(&headers, &[]));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["referer"], "a\"b\u{1}");
        assert_eq!(value["status"], 200);
        assert_eq!(value["duration_us"], 1500);
        assert_eq!(value["app"], "shop");
    }

    #[test]
    fn a_json_line_with_long_values_stays_one_whole_object() {
        let headers = vec![("Referer".to_string(), "r".repeat(5000)), ("User-Agent".to_string(), "\u{1}".repeat(2000))];
        let long = format!("/{}", "p".repeat(2100));
        let line = AccessFormat::Json.render(&AccessRecord { target: &long, path: &long, ..record(&headers, &[]) });
        assert!(line.len() <= super::super::RECORD_MAX && line.ends_with("}\n"), "{} bytes", line.len());
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!((value["remote_addr"].as_str(), value["status"].as_u64()), (Some("10.1.2.3"), Some(200)));
        assert!(value["time"].is_string() && value["pid"].is_u64() && value["duration_us"] == 1500, "{value}");
        let referer = value["referer"].as_str().unwrap();
        assert!(referer.starts_with("rrrr") && referer.ends_with(" bytes cut]"), "{referer}");
        assert!(value["path"].as_str().unwrap().starts_with("/ppp"));
        // Short values are left whole.
        assert_eq!(value["query"], "a=1");
        assert_eq!(value["method"], "GET");
    }
}
