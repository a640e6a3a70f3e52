//! Calendar dates and times of day in UTC, for the minutes (Howard Hinnant's
//! days-from-civil algorithms; no time-zone database).

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// The civil date (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The day count since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of a time (Unix milliseconds).
pub fn date(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `HH:MM` (UTC) of a time.
pub fn time_of_day(ms: i64) -> String {
    let s = ms.rem_euclid(DAY_MS) / 1000;
    format!("{:02}:{:02}", s / 3600, (s / 60) % 60)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a time.
pub fn timestamp(ms: i64) -> String {
    let s = ms.rem_euclid(DAY_MS) / 1000;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        date(ms),
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// The day a `YYYY-MM-DD` date names, as [start, end) in Unix milliseconds.
pub fn day_range(date: &str) -> Option<(i64, i64)> {
    let mut parts = date.split('-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let start = days_from_civil(y, m, d) * DAY_MS;
    // 2025-02-31 is not a day.
    (self::date(start) == format!("{y:04}-{m:02}-{d:02}")).then_some((start, start + DAY_MS))
}

/// A duration in whole minutes and seconds, `"12 min 5 s"`.
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match (s / 60, s % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_bad_ones_are_refused() {
        // 2025-11-27T14:03:05Z
        let t = 1_764_252_185_000;
        assert_eq!(timestamp(t), "2025-11-27T14:03:05Z");
        assert_eq!(time_of_day(t), "14:03");
        let (start, end) = day_range("2025-11-27").unwrap();
        assert!(start <= t && t < end);
        assert_eq!(date(start), "2025-11-27");
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(
            day_range("2024-02-29").map(|r| date(r.0)),
            Some("2024-02-29".into())
        );
        for bad in ["2025-02-30", "2025-13-01", "yesterday", "2025-11-27-1"] {
            assert!(day_range(bad).is_none(), "{bad}");
        }
        assert_eq!(duration(725_000), "12 min 5 s");
        assert_eq!(duration(60_000), "1 min");
    }
}
