//! The retention policy, with restic's meaning for each rule, as a pure function of the
//! backup times of one database (so it can be tested without a repository).
//!
//! - `keep_last N`: the N newest backups;
//! - `keep_daily N` / `keep_weekly N` / `keep_monthly N`: for each of the last N days (UTC),
//!   ISO weeks, months that have backups, the newest backup of that period;
//! - `keep_within D`: every backup newer than (the newest backup's time - D), whatever the
//!   clock says now, so a repository that stopped receiving backups is not emptied.
//!
//! A backup is kept when any rule keeps it; every rule that does is a reason shown by
//! `expire --dry-run`.

use std::time::Duration;

use time::OffsetDateTime;

/// What to keep; `None` rules keep nothing.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub keep_last: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    /// The duration and how the user wrote it (for the reasons).
    pub keep_within: Option<(Duration, String)>,
}

impl Policy {
    /// No rule given: `expire` then deletes nothing.
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_within.is_none()
    }
}

/// The period (day, ISO week, month) a time falls in, as text.
type PeriodOf = fn(OffsetDateTime) -> String;

/// For each of `times` (newest first), the reasons it is kept: empty when no rule keeps it.
pub fn keep_reasons(policy: &Policy, times: &[OffsetDateTime]) -> Vec<Vec<String>> {
    let mut reasons = vec![Vec::new(); times.len()];
    if let Some(n) = policy.keep_last {
        for (i, r) in reasons.iter_mut().enumerate().take(n as usize) {
            r.push(format!("last {}", i + 1));
        }
    }
    let periods: [(Option<u32>, &str, PeriodOf); 3] = [
        (policy.keep_daily, "daily", |t| {
            format!("{:04}-{:02}-{:02}", t.year(), t.month() as u8, t.day())
        }),
        (policy.keep_weekly, "weekly", |t| {
            let (year, week, _) = t.to_iso_week_date();
            format!("{year:04}-W{week:02}")
        }),
        (policy.keep_monthly, "monthly", |t| {
            format!("{:04}-{:02}", t.year(), t.month() as u8)
        }),
    ];
    for (count, rule, period_of) in periods {
        let Some(mut left) = count else { continue };
        let mut last_period: Option<String> = None;
        for (i, t) in times.iter().enumerate() {
            if left == 0 {
                break;
            }
            let period = period_of(*t);
            if last_period.as_ref() != Some(&period) {
                reasons[i].push(format!("{rule} ({period})"));
                last_period = Some(period);
                left -= 1;
            }
        }
    }
    if let (Some((within, text)), Some(newest)) = (&policy.keep_within, times.first()) {
        let since = *newest - *within;
        for (i, t) in times.iter().enumerate() {
            if *t > since {
                reasons[i].push(format!("within {text} of the newest"));
            }
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// Backups at 02:00 every day from 2026-10-01 to 2026-11-29, plus a second one at 14:00 on
    /// 2026-11-29; newest first.
    fn history() -> Vec<OffsetDateTime> {
        let mut v = vec![datetime!(2026-11-29 14:00 UTC)];
        let mut t = datetime!(2026-11-29 02:00 UTC);
        while t >= datetime!(2026-10-01 02:00 UTC) {
            v.push(t);
            t -= time::Duration::days(1);
        }
        v
    }

    fn kept(policy: &Policy, times: &[OffsetDateTime]) -> Vec<OffsetDateTime> {
        keep_reasons(policy, times)
            .iter()
            .zip(times)
            .filter(|(r, _)| !r.is_empty())
            .map(|(_, t)| *t)
            .collect()
    }

    #[test]
    fn nothing_given_keeps_nothing() {
        let p = Policy::default();
        assert!(p.is_empty());
        assert!(kept(&p, &history()).is_empty());
    }

    #[test]
    fn keep_last_keeps_the_newest() {
        let p = Policy {
            keep_last: Some(3),
            ..Policy::default()
        };
        let h = history();
        assert_eq!(kept(&p, &h), h[..3].to_vec());
        assert_eq!(keep_reasons(&p, &h)[2], vec!["last 3".to_string()]);
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_day() {
        let p = Policy {
            keep_daily: Some(2),
            ..Policy::default()
        };
        // 2026-11-29 has two backups: the later one is that day's.
        assert_eq!(
            kept(&p, &history()),
            vec![
                datetime!(2026-11-29 14:00 UTC),
                datetime!(2026-11-28 02:00 UTC)
            ]
        );
    }

    #[test]
    fn days_without_backups_do_not_count() {
        let times = vec![
            datetime!(2026-11-29 02:00 UTC),
            datetime!(2026-11-20 02:00 UTC),
            datetime!(2026-11-10 02:00 UTC),
        ];
        let p = Policy {
            keep_daily: Some(2),
            ..Policy::default()
        };
        assert_eq!(kept(&p, &times), times[..2].to_vec());
    }

    #[test]
    fn keep_weekly_uses_iso_weeks() {
        let p = Policy {
            keep_weekly: Some(3),
            ..Policy::default()
        };
        // 2026-11-29 is a Sunday (ISO week 48 ends on it); the weeks before end on Sundays.
        assert_eq!(
            kept(&p, &history()),
            vec![
                datetime!(2026-11-29 14:00 UTC),
                datetime!(2026-11-22 02:00 UTC),
                datetime!(2026-11-15 02:00 UTC)
            ]
        );
        assert_eq!(
            keep_reasons(&p, &history())[0],
            vec!["weekly (2026-W48)".to_string()]
        );
    }

    #[test]
    fn keep_monthly_keeps_the_newest_of_each_month() {
        let p = Policy {
            keep_monthly: Some(5),
            ..Policy::default()
        };
        // Only two months have backups: two are kept, not five.
        assert_eq!(
            kept(&p, &history()),
            vec![
                datetime!(2026-11-29 14:00 UTC),
                datetime!(2026-10-31 02:00 UTC)
            ]
        );
    }

    #[test]
    fn keep_within_counts_from_the_newest_backup() {
        let p = Policy {
            keep_within: Some((Duration::from_secs(2 * 86400), "2d".into())),
            ..Policy::default()
        };
        // Newer than 2026-11-27 14:00: the 14:00 and 02:00 of the 29th and the 28th.
        assert_eq!(
            kept(&p, &history()),
            vec![
                datetime!(2026-11-29 14:00 UTC),
                datetime!(2026-11-29 02:00 UTC),
                datetime!(2026-11-28 02:00 UTC)
            ]
        );
    }

    #[test]
    fn rules_combine_and_every_reason_is_given() {
        let p = Policy {
            keep_last: Some(1),
            keep_daily: Some(1),
            keep_monthly: Some(2),
            ..Policy::default()
        };
        let r = keep_reasons(&p, &history());
        assert_eq!(
            r[0],
            vec![
                "last 1".to_string(),
                "daily (2026-11-29)".to_string(),
                "monthly (2026-11)".to_string()
            ]
        );
        assert_eq!(kept(&p, &history()).len(), 2);
    }
}
