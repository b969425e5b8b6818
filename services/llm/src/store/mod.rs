//! PostgreSQL access, one module per aggregate: budgets and their reservations, usage
//! records, A/B tests, and what the selector learns from (promoted defaults, task outcomes).

mod ab_tests;
mod budgets;
mod learning;
mod usage;

pub(crate) use ab_tests::*;
pub(crate) use budgets::*;
pub(crate) use learning::*;
pub(crate) use usage::*;

use chrono::{DateTime, Datelike, TimeZone, Utc};

/// The calendar month (UTC) budgets are counted in: [start, end).
pub(crate) fn month(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single().unwrap_or(now);
    let (year, month) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    let end = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single().unwrap_or(now);
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_calendar_months_in_utc() {
        let (start, end) = month(Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 0).unwrap());
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
    }
}
