//! Wall-clock text that changes once a second (the `Date` header, the access log's time), formatted once a
//! second per thread rather than on every request.

use std::cell::RefCell;
use std::thread::LocalKey;

use chrono::{DateTime, Local, Utc};

type Cache = RefCell<(i64, String)>;

thread_local! {
    static HTTP_DATE: Cache = const { RefCell::new((i64::MIN, String::new())) };
    static LOG_TIME: Cache = const { RefCell::new((i64::MIN, String::new())) };
}

/// Appends the current time as an HTTP date, `Thu, 26 Nov 2026 09:37:49 GMT`, to `out`.
pub(crate) fn push_http_date(out: &mut Vec<u8>) {
    let now = Utc::now();
    let format = || now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    cached(&HTTP_DATE, now.timestamp(), format, |date| out.extend_from_slice(date.as_bytes()));
}

/// Appends the current local time as Gunicorn's access log shows it, `[26/Nov/2026:09:37:49 +0000]`, to `line`.
pub(crate) fn push_log_time(line: &mut String) {
    let now: DateTime<Local> = Local::now();
    let format = || now.format("[%d/%b/%Y:%H:%M:%S %z]").to_string();
    cached(&LOG_TIME, now.timestamp(), format, |time| line.push_str(time));
}

/// Hands `read` the text of `second`, formatted by `format` only when the cache holds another second's.
fn cached(cache: &'static LocalKey<Cache>, second: i64, format: impl FnOnce() -> String, read: impl FnOnce(&str)) {
    cache.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != second {
            *cache = (second, format());
        }
        read(&cache.1)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_look_like_gunicorn_and_http() {
        let mut date = Vec::new();
        super::push_http_date(&mut date);
        let date = String::from_utf8(date).unwrap();
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
        let mut time = String::new();
        super::push_log_time(&mut time);
        assert!(time.starts_with('[') && time.ends_with(']') && time.len() == 28, "{time}");
    }
}
