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

/// The current time as an HTTP date: `Thu, 26 Nov 2026 09:37:49 GMT`.
pub(crate) fn http_date() -> String {
    let now = Utc::now();
    cached(&HTTP_DATE, now.timestamp(), || now.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
}

/// The current local time as Gunicorn's access log shows it: `[26/Nov/2026:09:37:49 +0000]`.
pub(crate) fn log_time() -> String {
    let now: DateTime<Local> = Local::now();
    cached(&LOG_TIME, now.timestamp(), || now.format("[%d/%b/%Y:%H:%M:%S %z]").to_string())
}

fn cached(cache: &'static LocalKey<Cache>, second: i64, format: impl FnOnce() -> String) -> String {
    cache.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != second {
            *cache = (second, format());
        }
        cache.1.clone()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_look_like_gunicorn_and_http() {
        let date = super::http_date();
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
        let time = super::log_time();
        assert!(time.starts_with('[') && time.ends_with(']') && time.len() == 28, "{time}");
    }
}
