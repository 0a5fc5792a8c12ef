//! Wall-clock time for the records' `ts`, behind a trait so tests set it.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's clock: the one place that reads it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods, reason = "this is the clock")]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The time `seconds` after the Unix epoch, or `None` beyond what
/// [`SystemTime`] holds. For numbers from outside (a header, a token):
/// `UNIX_EPOCH + Duration::from_secs(n)` panics on a large `n`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use approval_audit::clock::from_unix_seconds;
///
/// assert_eq!(from_unix_seconds(60), Some(UNIX_EPOCH + Duration::from_secs(60)));
/// assert_eq!(from_unix_seconds(u64::MAX), None);
/// ```
pub fn from_unix_seconds(seconds: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// The wait a `Retry-After` header asks for, in its delay-seconds form
/// (RFC 9110 §10.2.3, the form Slack and Teams send), or `None` for any
/// other text. Callers cap the wait before they sleep.
///
/// ```
/// use std::time::Duration;
/// use approval_audit::clock::retry_after;
///
/// assert_eq!(retry_after(" 30 "), Some(Duration::from_secs(30)));
/// assert_eq!(retry_after("18446744073709551615"), Some(Duration::from_secs(u64::MAX)));
/// assert_eq!(retry_after("-1"), None);
/// assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
/// ```
pub fn retry_after(value: &str) -> Option<Duration> {
    value.trim().parse().ok().map(Duration::from_secs)
}

/// A clock that reads what it was set to; for tests.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use approval_audit::{Clock, ManualClock};
///
/// let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_764_000_000));
/// clock.advance(Duration::from_millis(5));
/// assert_eq!(clock.now(), UNIX_EPOCH + Duration::from_millis(1_764_000_000_005));
/// ```
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    /// A clock stopped at `time`.
    pub fn new(time: SystemTime) -> Self {
        Self(Mutex::new(time))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut time = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *time += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: SystemTime) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The clock reads a time the format cannot hold (before 1970 or after 9999).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the clock reads a time outside 1970..=9999, which a record's ts cannot hold")]
pub struct ClockOutOfRange;

/// Formats `time` as RFC 3339 in UTC with milliseconds and `Z`:
/// `2026-11-24T09:41:07.123Z` (24 bytes), as a record's `ts` is written.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use approval_audit::clock::format_ts;
///
/// let t = UNIX_EPOCH + Duration::from_millis(1_500);
/// assert_eq!(&format_ts(t).unwrap(), b"1970-01-01T00:00:01.500Z");
/// ```
pub fn format_ts(time: SystemTime) -> Result<[u8; 24], ClockOutOfRange> {
    let since = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ClockOutOfRange)?;
    let secs = since.as_secs();
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days);
    if year > 9999 {
        return Err(ClockOutOfRange);
    }
    let rem = secs % 86_400;
    let fields = [
        (year, 4),
        (month, 2),
        (day, 2),
        (rem / 3600, 2),
        (rem / 60 % 60, 2),
        (rem % 60, 2),
        (u64::from(since.subsec_millis()), 3),
    ];
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let starts = [0, 5, 8, 11, 14, 17, 20];
    for ((value, width), start) in fields.into_iter().zip(starts) {
        let mut v = value;
        for i in (start..start + width).rev() {
            // `v % 10` is below 10.
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    Ok(out)
}

/// Reads a `ts` as the records write it (`2026-01-01T00:00:00.000Z`);
/// `None` for anything else.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use approval_audit::clock::parse_ts;
///
/// let t = parse_ts(b"1970-01-01T00:00:01.500Z").unwrap();
/// assert_eq!(t, UNIX_EPOCH + Duration::from_millis(1500));
/// assert!(parse_ts(b"1970-01-01 00:00:01").is_none());
/// ```
pub fn parse_ts(text: &[u8]) -> Option<SystemTime> {
    let text: &[u8; 24] = text.try_into().ok()?;
    if &text[4..5] != b"-"
        || &text[7..8] != b"-"
        || text[10] != b'T'
        || text[13] != b':'
        || text[16] != b':'
        || text[19] != b'.'
        || text[23] != b'Z'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| {
        text[range].iter().try_fold(0u64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
        })
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second, millis) = (
        number(11..13)?,
        number(14..16)?,
        number(17..19)?,
        number(20..23)?,
    );
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if civil_from_days(days) != (year, month, day) {
        return None; // 31 April and the like
    }
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
}

/// (year, month, day) to days since 1970-01-01, proleptic Gregorian
/// (Howard Hinnant's `days_from_civil`, for years from 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: u64, millis: u64) -> String {
        let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
        String::from_utf8(format_ts(t).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn parses_what_it_formats_and_nothing_else() {
        for (secs, millis) in [
            (0, 0),
            (1_795_513_267, 123),
            (951_782_400, 999),
            (4_107_542_399, 1),
            (253_402_300_799, 999),
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
            assert_eq!(parse_ts(&format_ts(t).unwrap()), Some(t), "{secs}");
        }
        for bad in [
            "2026-11-24T09:41:07.123",
            "2026-11-24 09:41:07.123Z",
            "2026-04-31T09:41:07.123Z",
            "2026-13-01T09:41:07.123Z",
            "2026-11-24T24:00:00.000Z",
            "1969-12-31T23:59:59.999Z",
            "2026-11-24T09:41:0x.123Z",
            "+026-11-24T09:41:07.123Z",
        ] {
            assert_eq!(parse_ts(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn formats_rfc3339_utc_with_milliseconds() {
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(ts(1_795_513_267, 123), "2026-11-24T09:41:07.123Z");
        assert_eq!(ts(951_782_400, 999), "2000-02-29T00:00:00.999Z");
        assert_eq!(ts(4_107_542_399, 1), "2100-02-28T23:59:59.001Z");
        assert_eq!(ts(253_402_300_799, 0), "9999-12-31T23:59:59.000Z");
    }

    #[test]
    fn times_the_format_cannot_hold_are_errors_not_panics() {
        assert_eq!(
            format_ts(UNIX_EPOCH - Duration::from_secs(1)),
            Err(ClockOutOfRange)
        );
        assert_eq!(
            format_ts(UNIX_EPOCH + Duration::from_secs(253_402_300_800)),
            Err(ClockOutOfRange)
        );
    }

    #[test]
    fn agrees_with_humantime_over_many_instants() {
        // humantime is a maintained RFC 3339 formatter, used here as oracle.
        let mut secs: u64 = 0;
        while secs < 253_402_300_799 {
            let t = UNIX_EPOCH + Duration::from_millis(secs * 1000 + secs % 1000);
            let ours = String::from_utf8(format_ts(t).unwrap().to_vec()).unwrap();
            assert_eq!(ours, humantime::format_rfc3339_millis(t).to_string());
            secs += 7_777_777;
        }
    }

    proptest::proptest! {
        /// Every number a header can carry, and any text: an answer, never
        /// a panic, and the wait is the number.
        #[test]
        fn any_retry_after_is_answered(n: u64, text in "\\PC*") {
            proptest::prop_assert_eq!(retry_after(&format!(" {n}")), Some(Duration::from_secs(n)));
            let _answered = retry_after(&text);
        }

        /// Every `u64` of seconds: a time, or `None` beyond what the clock holds.
        #[test]
        fn any_unix_seconds_are_answered(n: u64) {
            let time = from_unix_seconds(n);
            if let Some(time) = time {
                proptest::prop_assert_eq!(time.duration_since(UNIX_EPOCH).unwrap().as_secs(), n);
            }
        }
    }
}
