//! Time settings given in seconds (flags, the config file, `$WASMCORN_CMD_ARGS`, the manifest): each is checked
//! once, where it is read, into a `Duration` of at most a year. Beyond that range the conversion from a float
//! panics (`1e300`), and adding the setting to the clock (`Instant + Duration`, as every deadline does) overflows
//! (`1e19`): a bad value is a one-line error at start-up, or a refused reload, never a crashed process.

use std::time::Duration;

use anyhow::bail;

/// The longest time a setting may name, in seconds: a year.
pub(crate) const LONGEST: u64 = 365 * 24 * 60 * 60;

/// Whether a setting accepts 0 (it then turns something off).
#[derive(Clone, Copy)]
pub(crate) enum Zero {
    Allowed,
    Refused,
}

/// `seconds`, fractions allowed, as a `Duration`; `name` is how the error names the setting.
pub(crate) fn fractional(name: &str, seconds: f64, zero: Zero) -> anyhow::Result<Duration> {
    let above_floor = match zero {
        Zero::Allowed => seconds >= 0.0,
        Zero::Refused => seconds > 0.0,
    };
    // NaN fails both comparisons; infinities fail one.
    if !(above_floor && seconds <= LONGEST as f64) {
        bail!("{name} must be {}, not {}", range(zero), shown(seconds));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Whole `seconds` as a `Duration`; `name` is how the error names the setting.
pub(crate) fn whole(name: &str, seconds: u64, zero: Zero) -> anyhow::Result<Duration> {
    if seconds > LONGEST || (seconds == 0 && matches!(zero, Zero::Refused)) {
        bail!("{name} must be {}, not {seconds}", range(zero));
    }
    Ok(Duration::from_secs(seconds))
}

/// A number as given, in exponent form when its digits would not fit on a line (`1e300`).
fn shown(seconds: f64) -> String {
    if seconds.abs() < 1e16 { format!("{seconds}") } else { format!("{seconds:e}") }
}

fn range(zero: Zero) -> String {
    match zero {
        Zero::Allowed => format!("a number of seconds from 0 to {LONGEST} (a year)"),
        Zero::Refused => format!("a positive number of seconds, at most {LONGEST} (a year)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_year_is_the_longest_setting() {
        assert_eq!(fractional("--keep-alive", 0.25, Zero::Allowed).unwrap(), Duration::from_millis(250));
        assert_eq!(fractional("--keep-alive", 0.0, Zero::Allowed).unwrap(), Duration::ZERO);
        assert_eq!(fractional("--x", LONGEST as f64, Zero::Refused).unwrap(), Duration::from_secs(LONGEST));
        assert_eq!(whole("--graceful-timeout", LONGEST, Zero::Allowed).unwrap(), Duration::from_secs(LONGEST));
        for bad in [1e300, 1e19, LONGEST as f64 + 1.0, f64::INFINITY, f64::NAN, -1.0, -0.5] {
            let err = fractional("--guest-timeout", bad, Zero::Refused).unwrap_err().to_string();
            let prefix = "--guest-timeout must be a positive number of seconds, at most 31536000 (a year), not ";
            assert_eq!(err, format!("{prefix}{}", shown(bad)));
        }
        assert_eq!(shown(1e300), "1e300");
        assert_eq!(shown(-0.5), "-0.5");
        assert_eq!(shown(31536001.0), "31536001");
        assert!(fractional("--guest-timeout", 0.0, Zero::Refused).is_err());
        let err = whole("--graceful-timeout", u64::MAX, Zero::Allowed).unwrap_err().to_string();
        assert_eq!(
            err,
            "--graceful-timeout must be a number of seconds from 0 to 31536000 (a year), not 18446744073709551615"
        );
    }

    #[test]
    fn the_longest_setting_can_be_added_to_the_clock() {
        let longest = fractional("--keep-alive", LONGEST as f64, Zero::Allowed).unwrap();
        assert!(std::time::Instant::now().checked_add(longest).is_some());
    }
}
