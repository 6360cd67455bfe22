//! When calendars and windows fall, as instants: a policy's `daily at`, `weekly on`,
//! `monthly on` and cron calendars, and maintenance windows, expanded in the site's time zone.
//!
//! Local times that a daylight-saving change skips run at the same distance after the change
//! (02:30 on a day that jumps from 02:00 to 03:00 runs at 03:30); local times that a change
//! repeats run once, at their first occurrence. This is jiff's "compatible" disambiguation, as
//! RFC 5545 and most schedulers do.

use crate::policy::{Schedule, Window};
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// A calendar as sets of minutes, hours, days, months and weekdays (cron's model; the named
/// calendars are special cases of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, 0 = Sunday.
    weekdays: u8,
    /// Day of month and weekday both restricted: a day matches either (cron's rule).
    either_day: bool,
}

const ALL_DAYS: u32 = !1;
const ALL_MONTHS: u16 = 0b1_1111_1111_1110;
const ALL_WEEKDAYS: u8 = 0x7f;

impl Calendar {
    /// The calendar of a parsed schedule.
    pub fn of(s: &Schedule) -> Calendar {
        let at = |m: u16| (1u64 << (m % 60), 1u32 << (m / 60));
        let bits8 = |v: &[u8]| v.iter().fold(0u32, |b, d| b | 1 << d);
        match s {
            Schedule::Daily { at: t } => {
                let (minutes, hours) = at(*t);
                Calendar::every_day(minutes, hours)
            }
            Schedule::Weekly { days, at: t } => {
                let (minutes, hours) = at(*t);
                Calendar {
                    weekdays: bits8(days) as u8,
                    ..Calendar::every_day(minutes, hours)
                }
            }
            Schedule::Monthly { days, at: t } => {
                let (minutes, hours) = at(*t);
                Calendar {
                    days: bits8(days),
                    ..Calendar::every_day(minutes, hours)
                }
            }
            Schedule::Cron { expr } => Calendar::cron(expr),
        }
    }

    fn every_day(minutes: u64, hours: u32) -> Calendar {
        Calendar {
            minutes,
            hours,
            days: ALL_DAYS,
            months: ALL_MONTHS,
            weekdays: ALL_WEEKDAYS,
            either_day: false,
        }
    }

    /// A cron expression the policy parser already checked.
    fn cron(expr: &str) -> Calendar {
        let f: Vec<&str> = expr.split_whitespace().collect();
        let weekdays = cron_bits(f[4], 0, 7);
        // 7 is Sunday too.
        let weekdays = ((weekdays | weekdays >> 7) & 0x7f) as u8;
        let restricted = |s: &str| !s.starts_with('*');
        Calendar {
            minutes: cron_bits(f[0], 0, 59),
            hours: cron_bits(f[1], 0, 23) as u32,
            days: cron_bits(f[2], 1, 31) as u32,
            months: cron_bits(f[3], 1, 12) as u16,
            weekdays,
            either_day: restricted(f[2]) && restricted(f[4]),
        }
    }

    fn on(&self, d: Date) -> bool {
        if self.months & 1 << d.month() == 0 {
            return false;
        }
        let dom = self.days & 1 << d.day() != 0;
        let dow = self.weekdays & 1 << d.weekday().to_sunday_zero_offset() != 0;
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// Every instant the calendar names in `[from, until)`, in order, in time zone `tz`.
    pub fn instants(&self, tz: &TimeZone, from: Timestamp, until: Timestamp) -> Vec<Timestamp> {
        let mut out = Vec::new();
        for d in local_dates(tz, from, until) {
            if !self.on(d) {
                continue;
            }
            for h in bits(u64::from(self.hours)) {
                for m in bits(self.minutes) {
                    let t = local(tz, d.at(h as i8, m as i8, 0, 0));
                    if from <= t && t < until {
                        out.push(t);
                    }
                }
            }
        }
        // A skipped local time can land on one the calendar names anyway.
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The instant of a local time; see the module's note on daylight-saving changes.
pub fn local(tz: &TimeZone, dt: DateTime) -> Timestamp {
    tz.to_ambiguous_timestamp(dt)
        .compatible()
        .expect("a local time of a date from a timestamp is in range")
}

/// The local dates around `[from, until)`, a day more on each side.
fn local_dates(tz: &TimeZone, from: Timestamp, until: Timestamp) -> impl Iterator<Item = Date> {
    let first = from.to_zoned(tz.clone()).date().yesterday().ok();
    let last = until.to_zoned(tz.clone()).date().tomorrow().ok();
    std::iter::successors(first, move |d| {
        d.tomorrow().ok().filter(|n| Some(*n) <= last)
    })
}

fn bits(mut b: u64) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        (b != 0).then(|| {
            let i = b.trailing_zeros();
            b &= b - 1;
            i
        })
    })
}

fn cron_bits(field: &str, lo: u32, hi: u32) -> u64 {
    let mut out = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse().unwrap_or(1)),
            None => (part, 1),
        };
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (a.parse().unwrap_or(lo), b.parse().unwrap_or(hi)),
                // `5/15` means from 5 to the end, every 15.
                None if step > 1 => (r.parse().unwrap_or(lo), hi),
                None => {
                    let n = r.parse().unwrap_or(lo);
                    (n, n)
                }
            },
        };
        for v in (a..=b).step_by(step as usize) {
            out |= 1 << v;
        }
    }
    out
}

/// The opening of `w` that `now` is in, or else the next one (within a week): the window a
/// run started now is given (`hokan run --window`, and the daemon's scheduled runs).
pub fn opening_at(w: &Window, tz: &TimeZone, now: Timestamp) -> Option<(Timestamp, Timestamp)> {
    let day = SignedDuration::from_hours(24);
    window_intervals(w, tz, now - day, now + day * 8)
        .into_iter()
        .find(|&(_, closes)| closes > now)
}

/// The times a window is open in `[from, until)` (and the ones that overlap its edges), in
/// order, as `(opens, closes)`.
pub fn window_intervals(
    w: &Window,
    tz: &TimeZone,
    from: Timestamp,
    until: Timestamp,
) -> Vec<(Timestamp, Timestamp)> {
    let at = |d: Date, m: u16| {
        let (d, m) = if m >= 1440 {
            (d.tomorrow().unwrap_or(d), m - 1440)
        } else {
            (d, m)
        };
        local(tz, d.at((m / 60) as i8, (m % 60) as i8, 0, 0))
    };
    let mut out = Vec::new();
    for d in local_dates(tz, from, until) {
        let wd = d.weekday().to_sunday_zero_offset() as u8;
        if w.days.as_ref().is_some_and(|days| !days.contains(&wd)) {
            continue;
        }
        let opens = at(d, w.start);
        let closes = if w.end > w.start {
            at(d, w.end)
        } else {
            at(d, w.end + 1440)
        };
        if opens < until && closes > from {
            out.push((opens, closes));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(name: &str) -> TimeZone {
        jiff::tz::db().get(name).unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn instants(cal: &str, zone: &str, from: &str, until: &str) -> Vec<String> {
        let z = tz(zone);
        Calendar::of(&Schedule::parse(cal).unwrap())
            .instants(&z, ts(from), ts(until))
            .into_iter()
            .map(|t| t.to_zoned(z.clone()).strftime("%F %a %H:%M %Z").to_string())
            .collect()
    }

    #[test]
    fn named_calendars_fall_on_their_days() {
        assert_eq!(
            instants(
                "daily at 02:10",
                "Asia/Tokyo",
                "2026-11-01T00:00:00+09:00",
                "2026-11-04T00:00:00+09:00"
            ),
            [
                "2026-11-01 Sun 02:10 JST",
                "2026-11-02 Mon 02:10 JST",
                "2026-11-03 Tue 02:10 JST"
            ]
        );
        assert_eq!(
            instants(
                "weekly on sun,wed at 23:30",
                "Asia/Tokyo",
                "2026-11-01T00:00:00Z",
                "2026-11-10T00:00:00Z"
            ),
            [
                "2026-11-01 Sun 23:30 JST",
                "2026-11-04 Wed 23:30 JST",
                "2026-11-08 Sun 23:30 JST"
            ]
        );
        // There is no 31 November: like cron, that month has no run.
        assert_eq!(
            instants(
                "monthly on 15,31 at 04:00",
                "Asia/Tokyo",
                "2026-11-01T00:00:00Z",
                "2027-01-01T00:00:00Z"
            ),
            [
                "2026-11-15 Sun 04:00 JST",
                "2026-12-15 Tue 04:00 JST",
                "2026-12-31 Thu 04:00 JST"
            ]
        );
    }

    #[test]
    fn cron_fields_and_the_either_day_rule() {
        assert_eq!(
            instants(
                "*/20 1 * * *",
                "UTC",
                "2026-11-01T00:00:00Z",
                "2026-11-02T00:00:00Z"
            ),
            [
                "2026-11-01 Sun 01:00 UTC",
                "2026-11-01 Sun 01:20 UTC",
                "2026-11-01 Sun 01:40 UTC"
            ]
        );
        // Day of month 1 or a Friday (both restricted: either matches); 7 is Sunday as well.
        assert_eq!(
            instants(
                "0 3 1 * 5",
                "UTC",
                "2026-11-01T00:00:00Z",
                "2026-11-10T00:00:00Z"
            ),
            ["2026-11-01 Sun 03:00 UTC", "2026-11-06 Fri 03:00 UTC"]
        );
        assert_eq!(
            instants(
                "0 3 * * 7",
                "UTC",
                "2026-11-01T00:00:00Z",
                "2026-11-09T00:00:00Z"
            ),
            ["2026-11-01 Sun 03:00 UTC", "2026-11-08 Sun 03:00 UTC"]
        );
        assert_eq!(
            instants(
                "30 2 * 12 1-5",
                "UTC",
                "2026-11-29T00:00:00Z",
                "2026-12-03T00:00:00Z"
            ),
            ["2026-12-01 Tue 02:30 UTC", "2026-12-02 Wed 02:30 UTC"]
        );
    }

    #[test]
    fn daylight_saving_changes_neither_lose_nor_repeat_a_run() {
        // Europe/London, 29 March 2026: 01:00 GMT jumps to 02:00 BST. 01:30 does not exist
        // that night: it runs at 02:30 BST, an hour after 00:30 as on any other night.
        assert_eq!(
            instants(
                "daily at 01:30",
                "Europe/London",
                "2026-03-28T00:00:00Z",
                "2026-03-31T00:00:00Z"
            ),
            [
                "2026-03-28 Sat 01:30 GMT",
                "2026-03-29 Sun 02:30 BST",
                "2026-03-30 Mon 01:30 BST"
            ]
        );
        // 25 October 2026: 02:00 BST falls back to 01:00 GMT. 01:30 happens twice; it runs
        // once, the first time.
        assert_eq!(
            instants(
                "daily at 01:30",
                "Europe/London",
                "2026-10-24T00:00:00Z",
                "2026-10-27T00:00:00Z"
            ),
            [
                "2026-10-24 Sat 01:30 BST",
                "2026-10-25 Sun 01:30 BST",
                "2026-10-26 Mon 01:30 GMT"
            ]
        );
        // Every 30 minutes across the jump: 01:00 and 01:30 land on 02:00 and 02:30, which the
        // calendar names anyway; no instant runs twice.
        let spring = instants(
            "*/30 0-3 * * *",
            "Europe/London",
            "2026-03-29T00:00:00Z",
            "2026-03-29T03:00:00Z",
        );
        assert_eq!(
            spring,
            [
                "2026-03-29 Sun 00:00 GMT",
                "2026-03-29 Sun 00:30 GMT",
                "2026-03-29 Sun 02:00 BST",
                "2026-03-29 Sun 02:30 BST",
                "2026-03-29 Sun 03:00 BST",
                "2026-03-29 Sun 03:30 BST"
            ]
        );
    }

    #[test]
    fn windows_open_on_their_days_and_may_wrap() {
        let z = tz("Asia/Tokyo");
        let w = Window::parse("22:00-02:00 on sat").unwrap();
        let got = window_intervals(
            &w,
            &z,
            ts("2026-11-01T00:00:00+09:00"),
            ts("2026-11-15T00:00:00+09:00"),
        );
        let show = |t: Timestamp| t.to_zoned(z.clone()).strftime("%F %H:%M").to_string();
        let got: Vec<_> = got.into_iter().map(|(a, b)| (show(a), show(b))).collect();
        assert_eq!(
            got,
            [
                // Open at the period's start: it overlaps the period.
                ("2026-10-31 22:00".into(), "2026-11-01 02:00".into()),
                ("2026-11-07 22:00".into(), "2026-11-08 02:00".into()),
                (
                    "2026-11-14 22:00".to_string(),
                    "2026-11-15 02:00".to_string()
                )
            ]
        );
        let whole = Window::parse("00:00-24:00").unwrap();
        let got = window_intervals(
            &whole,
            &z,
            ts("2026-11-01T00:00:00+09:00"),
            ts("2026-11-02T00:00:00+09:00"),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.as_second() - got[0].0.as_second(), 86_400);
    }
}
