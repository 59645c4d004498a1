//! The environ of the request an instance serves, kept in its store for the guest to ask for (`request.environ-var`
//! and `request.environ`). A `lazy-app` guest is given no environ and reads what it needs through these; an `app`
//! guest may call them too. One copy of its text per request, into buffers that pass from store to store, so a
//! worker allocates nothing for it once its first requests have sized them; emptied after each request, and given
//! back when a request's environ was larger than most (`KEPT_TEXT`), so that one large head does not make a worker
//! hold that much for every app it hosts.

/// The most bytes of text, and variables, whose room is kept for the next request once a request is done.
const KEPT_TEXT: usize = 16 << 10;
const KEPT_VARIABLES: usize = 256;

/// A request's environ: the names and values end to end in one text, and where each variable lies in it.
#[derive(Debug, Default)]
pub(super) struct AskedEnviron {
    text: String,
    /// For each variable, where its name ends in `text` and where its value ends (the value follows its name).
    ends: Vec<(usize, usize)>,
}

impl AskedEnviron {
    /// Holds `environ` (in place of what it held).
    pub(super) fn fill(&mut self, environ: &[(&str, &str)]) {
        self.clear();
        for (name, value) in environ {
            self.text.push_str(name);
            let name_end = self.text.len();
            self.text.push_str(value);
            self.ends.push((name_end, self.text.len()));
        }
    }

    /// Holds nothing, keeping its buffers for the next request unless they grew past `KEPT_TEXT` or
    /// `KEPT_VARIABLES`.
    pub(super) fn clear(&mut self) {
        if self.text.capacity() > KEPT_TEXT || self.ends.capacity() > KEPT_VARIABLES {
            *self = AskedEnviron::default();
        }
        self.text.clear();
        self.ends.clear();
    }

    /// Each variable's name and value, in the order they were given.
    pub(super) fn variables(&self) -> impl Iterator<Item = (&str, &str)> {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&(_, value_end)| value_end));
        self.ends
            .iter()
            .zip(starts)
            .map(|(&(name_end, value_end), start)| (&self.text[start..name_end], &self.text[name_end..value_end]))
    }

    /// The value of the first variable named `name`.
    pub(super) fn value(&self, name: &str) -> Option<&str> {
        self.variables().find(|(candidate, _)| *candidate == name).map(|(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_gives_back_the_environ_it_was_filled_with_and_nothing_of_the_one_before() {
        let mut environ = AskedEnviron::default();
        environ.fill(&[("PATH_INFO", "/first"), ("QUERY_STRING", "secret=1"), ("HTTP_X", "")]);
        assert_eq!(environ.value("QUERY_STRING"), Some("secret=1"));
        assert_eq!(environ.value("HTTP_X"), Some(""));
        environ.fill(&[("PATH_INFO", "/second"), ("", "nameless"), ("REMOTE_ADDR", "127.0.0.1")]);
        let variables: Vec<_> = environ.variables().collect();
        assert_eq!(variables, [("PATH_INFO", "/second"), ("", "nameless"), ("REMOTE_ADDR", "127.0.0.1")]);
        assert_eq!(environ.value("QUERY_STRING"), None);
        assert_eq!(environ.value("path_info"), None, "names are case-sensitive");
        assert_eq!(environ.value(""), Some("nameless"));
        environ.clear();
        assert_eq!(environ.variables().count(), 0);
        assert_eq!(environ.value("PATH_INFO"), None);
    }

    #[test]
    fn it_keeps_the_room_of_a_usual_environ_and_gives_back_that_of_a_large_one() {
        let mut environ = AskedEnviron::default();
        environ.fill(&[("HTTP_X", "v"); 20]);
        environ.clear();
        assert!(environ.text.capacity() > 0 && environ.ends.capacity() >= 20, "kept for the next request");
        let large = "v".repeat(KEPT_TEXT);
        environ.fill(&[("HTTP_X", large.as_str())]);
        environ.clear();
        assert_eq!((environ.text.capacity(), environ.ends.capacity()), (0, 0));
        environ.fill(&[("HTTP_X", "v"); KEPT_VARIABLES + 1]);
        environ.clear();
        assert_eq!((environ.text.capacity(), environ.ends.capacity()), (0, 0));
    }
}
