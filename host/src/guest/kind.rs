//! The kinds of guest wasmcorn serves, told apart by what a component exports: a `wasmcorn:app` guest exports
//! `handle` (our WIT; `handle-request` in its `lazy-app` world, `respond` in its `returning-app` world), a
//! standard `wasi:http` proxy component exports `wasi:http/incoming-handler@0.2.x`. The compile step reads the
//! exports once and records the kind beside the artefact; the user never names it.

use anyhow::bail;
use wasmtime::Engine;
use wasmtime::component::Component;

/// What a component is, and so how a worker calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Exports a `wasmcorn:app` handler.
    App,
    /// Exports `wasi:http/incoming-handler` (the `wasi:http/proxy` world of WASI 0.2).
    Proxy,
}

/// The export of a `wasmcorn:app` guest, which is given the environ.
pub(super) const APP_EXPORT: &str = "handle";
/// The export of a `wasmcorn:app` guest of the `lazy-app` world, which asks for the environ.
pub(super) const LAZY_APP_EXPORT: &str = "handle-request";
/// The export of a `wasmcorn:app` guest of the `returning-app` world, which returns its whole response.
pub(super) const RETURNING_APP_EXPORT: &str = "respond";
/// The export of a `wasi:http` proxy component, before its version.
const PROXY_EXPORT: &str = "wasi:http/incoming-handler@0.2.";

impl Kind {
    /// The kind of `component`, from its exports; an error names what it exports instead.
    pub(super) fn of(engine: &Engine, component: &Component) -> anyhow::Result<Kind> {
        let names: Vec<String> = component.component_type().exports(engine).map(|(name, _)| name.to_string()).collect();
        Kind::from_exports(&names)
    }

    fn from_exports(names: &[String]) -> anyhow::Result<Kind> {
        if names.iter().any(|name| [APP_EXPORT, LAZY_APP_EXPORT, RETURNING_APP_EXPORT].contains(&name.as_str())) {
            return Ok(Kind::App);
        }
        if names.iter().any(|name| name.starts_with(PROXY_EXPORT)) {
            return Ok(Kind::Proxy);
        }
        let exported = if names.is_empty() { "nothing".to_string() } else { names.join(", ") };
        bail!(
            "the component exports neither a wasmcorn:app handler (`handle`, `handle-request` of the lazy-app world \
             or `respond` of the returning-app world) nor wasi:http/incoming-handler@0.2.x (it exports {exported})"
        )
    }

    /// The kind as it travels from the compile step to the arbiter: one byte.
    pub fn tag(self) -> u8 {
        match self {
            Kind::App => b'a',
            Kind::Proxy => b'p',
        }
    }

    pub fn from_tag(tag: u8) -> Option<Kind> {
        match tag {
            b'a' => Some(Kind::App),
            b'p' => Some(Kind::Proxy),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exports_tell_the_kind() {
        let names = |list: &[&str]| list.iter().map(|name| name.to_string()).collect::<Vec<_>>();
        assert_eq!(Kind::from_exports(&names(&["handle"])).unwrap(), Kind::App);
        assert_eq!(Kind::from_exports(&names(&["handle-request"])).unwrap(), Kind::App);
        assert_eq!(Kind::from_exports(&names(&["whole-response", "respond"])).unwrap(), Kind::App);
        assert_eq!(Kind::from_exports(&names(&["wasi:http/incoming-handler@0.2.6"])).unwrap(), Kind::Proxy);
        assert_eq!(Kind::from_exports(&names(&["wasi:http/incoming-handler@0.2.12"])).unwrap(), Kind::Proxy);
        let err = Kind::from_exports(&names(&["wasi:cli/run@0.2.0"])).unwrap_err();
        assert!(format!("{err}").contains("(it exports wasi:cli/run@0.2.0)"), "{err}");
        assert!(Kind::from_exports(&names(&["wasi:http/incoming-handler@0.3.0"])).is_err());
        for kind in [Kind::App, Kind::Proxy] {
            assert_eq!(Kind::from_tag(kind.tag()), Some(kind));
        }
    }
}
