//! The fixed label values of the metrics, so that no client or guest can grow their number: HTTP methods
//! (OpenTelemetry's known ones, the rest as `_OTHER`), guest outcomes, and the app label a request is counted
//! under.

/// Method labels by index; index 0 is every other method.
pub(crate) const METHODS: [&str; 10] =
    ["_OTHER", "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// Guest outcome labels by index.
pub(crate) const OUTCOMES: [&str; 5] = ["completed", "refused", "timed_out", "trapped", "over_memory"];

/// The index of `method`'s label (methods are case-sensitive: `get` is another method).
pub(crate) fn method_index(method: &str) -> u32 {
    METHODS.iter().skip(1).position(|known| *known == method).map_or(0, |index| index as u32 + 1)
}

/// A status code as counted: a three-digit code, or 0 for anything else.
pub(crate) fn status_field(status: u16) -> u32 {
    if (100..=999).contains(&status) { u32::from(status) } else { 0 }
}

/// The `app` label of a request answered for `app` as the access log names it: the one app of a server without
/// a manifest (empty name) is `default`; a request no app took (`-`) has an empty label.
pub(crate) fn app_label(app: &str) -> &str {
    match app {
        "" => "default",
        "-" => "",
        name => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_and_odd_statuses_fold_into_fixed_labels() {
        assert_eq!(METHODS[method_index("GET") as usize], "GET");
        assert_eq!(METHODS[method_index("PATCH") as usize], "PATCH");
        assert_eq!(method_index("BREW"), 0);
        assert_eq!(method_index("get"), 0);
        assert_eq!(status_field(404), 404);
        assert_eq!(status_field(42), 0);
        assert_eq!(app_label(""), "default");
        assert_eq!(app_label("-"), "");
        assert_eq!(app_label("shop"), "shop");
    }
}
