//! Attended hours: when a policy's reviewers can be reached. Outside them a
//! request is unattended, and the policy's `unreachable` mode says what
//! happens (deny, wait, or queue), as when a route is down.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MINUTES_A_DAY: u16 = 24 * 60;

/// When a policy's reviewers can be reached: days of the week and a span
/// of the day, at a fixed offset from UTC (`attended = { days = ["mon",
/// "tue", "wed", "thu", "fri"], from = "09:00", to = "18:00", utc_offset =
/// "+01:00" }` in a policy file). A span whose end is before its start runs
/// overnight (`from = "22:00", to = "06:00"`: from 22:00 on each day named
/// to 06:00 the next morning); `to = "24:00"` is the end of the day.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use approval_core::AttendedHours;
///
/// let office = AttendedHours::new(["mon", "tue", "wed", "thu", "fri"], "09:00", "18:00", "+00:00")?;
/// // Thursday 1 January 1970, 10:00 and 20:00 UTC.
/// assert!(office.contains(UNIX_EPOCH + Duration::from_secs(10 * 3600)));
/// assert!(!office.contains(UNIX_EPOCH + Duration::from_secs(20 * 3600)));
/// # Ok::<(), approval_core::HoursError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HoursSpec", into = "HoursSpec")]
pub struct AttendedHours {
    /// Monday first.
    days: [bool; 7],
    from: u16,
    to: u16,
    /// Minutes east of UTC.
    offset: i16,
}

/// The hours as a policy file writes them (and the digest covers them).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HoursSpec {
    days: Vec<String>,
    from: String,
    to: String,
    #[serde(default = "utc")]
    utc_offset: String,
}

fn utc() -> String {
    "+00:00".into()
}

/// Hours that cannot be: an unknown day, a time that is not `HH:MM`, an
/// empty span, an offset beyond ±14:00.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attended hours: {0}")]
pub struct HoursError(String);

/// `HH:MM` as minutes of the day; `24:00` only if `end`.
fn minutes(text: &str, end: bool) -> Result<u16, HoursError> {
    let bad = || HoursError(format!("{text:?} is not a time of day (HH:MM)"));
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let total = h * 60 + m;
    if m >= 60 || total > MINUTES_A_DAY || (total == MINUTES_A_DAY && !end) {
        return Err(bad());
    }
    Ok(total)
}

impl AttendedHours {
    /// Hours on `days` (`mon` … `sun`) from `from` to `to` (`HH:MM`), at
    /// `utc_offset` (`+HH:MM` or `-HH:MM`).
    pub fn new<D: AsRef<str>>(
        days: impl IntoIterator<Item = D>,
        from: &str,
        to: &str,
        utc_offset: &str,
    ) -> Result<Self, HoursError> {
        let mut set = [false; 7];
        for day in days {
            let day = day.as_ref();
            let i = DAYS
                .iter()
                .position(|d| *d == day)
                .ok_or_else(|| HoursError(format!("{day:?} is not a day (mon … sun)")))?;
            set[i] = true;
        }
        if !set.contains(&true) {
            return Err(HoursError("no day is named".into()));
        }
        let (from, to) = (minutes(from, false)?, minutes(to, true)?);
        if from == to {
            return Err(HoursError("the span is empty (from equals to)".into()));
        }
        let bad = || HoursError(format!("{utc_offset:?} is not an offset from UTC (+HH:MM)"));
        let (sign, rest) = match utc_offset.split_at_checked(1) {
            Some(("+", rest)) => (1, rest),
            Some(("-", rest)) => (-1, rest),
            _ => return Err(bad()),
        };
        let offset = minutes(rest, false).map_err(|_| bad())?;
        if offset > 14 * 60 {
            return Err(bad());
        }
        Ok(Self {
            days: set,
            from,
            to,
            offset: sign * i16::try_from(offset).map_err(|_| bad())?,
        })
    }

    /// Whether `time` is within the hours.
    pub fn contains(&self, time: SystemTime) -> bool {
        let since = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_add_signed(i64::from(self.offset) * 60);
        let day = since / 86_400;
        // 1 January 1970 was a Thursday (index 3, Monday first).
        let weekday = usize::try_from((day + 3) % 7).unwrap_or(0);
        let yesterday = (weekday + 6) % 7;
        let minute = u16::try_from(since % 86_400 / 60).unwrap_or(0);
        if self.from < self.to {
            self.days[weekday] && (self.from..self.to).contains(&minute)
        } else {
            (self.days[weekday] && minute >= self.from)
                || (self.days[yesterday] && minute < self.to)
        }
    }
}

impl std::fmt::Display for AttendedHours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let spec = HoursSpec::from(self.clone());
        write!(
            f,
            "{} {}-{} UTC{}",
            spec.days.join(","),
            spec.from,
            spec.to,
            spec.utc_offset
        )
    }
}

impl TryFrom<HoursSpec> for AttendedHours {
    type Error = HoursError;

    fn try_from(spec: HoursSpec) -> Result<Self, Self::Error> {
        Self::new(&spec.days, &spec.from, &spec.to, &spec.utc_offset)
    }
}

impl From<AttendedHours> for HoursSpec {
    fn from(hours: AttendedHours) -> Self {
        let hhmm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        let offset = hours.offset.unsigned_abs();
        Self {
            days: DAYS
                .iter()
                .zip(hours.days)
                .filter(|(_, on)| *on)
                .map(|(d, _)| (*d).to_owned())
                .collect(),
            from: hhmm(hours.from),
            to: hhmm(hours.to),
            utc_offset: format!(
                "{}{}",
                if hours.offset < 0 { '-' } else { '+' },
                hhmm(offset)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Thursday 1 January 1970 plus `days` and `hh:mm` UTC.
    fn at(days: u64, hh: u64, mm: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(days * 86_400 + hh * 3600 + mm * 60)
    }

    #[test]
    fn office_hours_hold_on_weekdays_between_their_times_at_their_offset() {
        let office = AttendedHours::new(
            ["mon", "tue", "wed", "thu", "fri"],
            "09:00",
            "18:00",
            "+01:00",
        )
        .unwrap();
        assert!(office.contains(at(0, 8, 0)), "Thursday 09:00 at +01:00");
        assert!(!office.contains(at(0, 7, 59)));
        assert!(!office.contains(at(0, 17, 0)), "18:00 at +01:00 is the end");
        assert!(!office.contains(at(2, 10, 0)), "Saturday");
        assert!(office.contains(at(4, 10, 0)), "Monday");
        assert_eq!(
            office.to_string(),
            "mon,tue,wed,thu,fri 09:00-18:00 UTC+01:00"
        );
    }

    #[test]
    fn an_overnight_span_runs_into_the_next_morning() {
        let night = AttendedHours::new(["fri"], "22:00", "06:00", "+00:00").unwrap();
        assert!(night.contains(at(1, 23, 0)), "Friday 23:00");
        assert!(night.contains(at(2, 5, 59)), "Saturday 05:59");
        assert!(!night.contains(at(2, 6, 0)));
        assert!(!night.contains(at(2, 23, 0)), "Saturday night is not named");
        let all_day = AttendedHours::new(["thu"], "00:00", "24:00", "-05:00").unwrap();
        assert!(all_day.contains(at(0, 12, 0)));
    }

    #[test]
    fn impossible_hours_are_refused_with_what_is_wrong() {
        for (days, from, to, offset, why) in [
            (vec!["mon"], "9:00", "18:00", "+00:00", "not a time of day"),
            (vec!["mon"], "09:60", "18:00", "+00:00", "not a time of day"),
            (vec!["mon"], "24:00", "18:00", "+00:00", "not a time of day"),
            (vec!["mon"], "09:00", "09:00", "+00:00", "empty"),
            (vec!["monday"], "09:00", "18:00", "+00:00", "not a day"),
            (vec![], "09:00", "18:00", "+00:00", "no day"),
            (vec!["mon"], "09:00", "18:00", "+15:00", "not an offset"),
            (vec!["mon"], "09:00", "18:00", "01:00", "not an offset"),
        ] {
            let err = AttendedHours::new(days, from, to, offset).unwrap_err();
            assert!(err.to_string().contains(why), "{from} {to} {offset}: {err}");
        }
    }
}
