//! Which sets a job keeps, restic's `forget` rules over a job's good sets:
//!
//! - `keep_last`: the newest N;
//! - `keep_within`: every set made within this span of the newest set (not of now, so a job
//!   that stopped backing up keeps what it had);
//! - `keep_daily`, `keep_weekly`, `keep_monthly`, `keep_yearly`: the newest set of each of the
//!   last N days, ISO weeks (Monday to Sunday), months and years that have a set.
//!
//! Days, weeks, months and years are the site's: a Tokyo site's backup at 02:10 on 1 December
//! is December's, though its id (UTC) says 30 November. A set any rule keeps is kept, and the
//! sets the caller protects (the newest good set, the newest set verified by a restore test, the
//! one just written) are never pruned.

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A job's retention rules; all `None` keeps every set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep this many newest sets.
    pub keep_last: Option<u32>,
    /// Keep every set made within this span of the newest one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<Within>,
    /// Keep the newest set of each of this many days.
    pub keep_daily: Option<u32>,
    /// Keep the newest set of each of this many weeks.
    pub keep_weekly: Option<u32>,
    /// Keep the newest set of each of this many months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest set of each of this many years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
}

/// The span of `keep_within`, in calendar units of the site: `"10d"`, `"2w"`, `"1y 6mo"`,
/// `"36h"`. Minutes and seconds are refused: restic writes months as `m`, which here would be
/// minutes, and a policy copied from restic must not keep six minutes instead of six months.
#[derive(Debug, Clone, Copy)]
pub struct Within(Span);

impl PartialEq for Within {
    fn eq(&self, other: &Within) -> bool {
        // "1d" and "24h" are different rules (a day across a clock change is not 24 hours).
        self.0.fieldwise() == other.0.fieldwise()
    }
}

impl Eq for Within {}

impl Within {
    /// The span written in a policy, or why it is not one.
    pub fn parse(s: &str) -> Result<Within, String> {
        let span: Span = s.trim().parse().map_err(|e| {
            format!(
                "`{s}` is not a span of time ({e}); write it as \"10d\", \"2w\", \"1y 6mo\" or \
                 \"36h\""
            )
        })?;
        let small = span.get_minutes() != 0
            || span.get_seconds() != 0
            || span.get_milliseconds() != 0
            || span.get_microseconds() != 0
            || span.get_nanoseconds() != 0;
        if small {
            return Err(format!(
                "`{s}` has minutes or seconds; keep_within takes years (y), months (mo), weeks \
                 (w), days (d) and hours (h). For six months write \"6mo\": \"6m\" is six minutes"
            ));
        }
        if span.is_negative() || span.is_zero() {
            return Err(format!("`{s}` is not a positive span of time"));
        }
        Ok(Within(span))
    }
}

impl std::fmt::Display for Within {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl Serialize for Within {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Within {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Within, D::Error> {
        let s = String::deserialize(d)?;
        Within::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A period a bucketing rule keeps one set of, as a number that grows with time.
type Bucket = fn(&Zoned) -> i64;

fn day(z: &Zoned) -> i64 {
    i64::from(z.year()) * 1000 + i64::from(z.day_of_year())
}

fn week(z: &Zoned) -> i64 {
    let w = z.date().iso_week_date();
    i64::from(w.year()) * 100 + i64::from(w.week())
}

fn month(z: &Zoned) -> i64 {
    i64::from(z.year()) * 100 + i64::from(z.month())
}

fn year(z: &Zoned) -> i64 {
    i64::from(z.year())
}

impl Retention {
    /// Whether any rule is set (without one, nothing is pruned).
    pub fn is_set(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_within.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
    }

    /// The sets to prune among good set ids (any order), oldest first. Days and the other
    /// periods are those of `tz`, the site's time zone. The newest id and every id in
    /// `protected` are kept whatever the rules say. An id that is not a set id is never pruned:
    /// its time is unknown, so no rule can say it is old.
    pub fn prune(&self, ids: &[String], tz: &TimeZone, protected: &[&str]) -> Vec<String> {
        if !self.is_set() {
            return Vec::new();
        }
        let mut dated: Vec<(Zoned, &String)> = ids
            .iter()
            .filter_map(|id| Some((time_of(id)?.to_zoned(tz.clone()), id)))
            .collect();
        dated.sort_by(|a, b| b.cmp(a));
        let mut keep: BTreeSet<&str> = protected.iter().copied().collect();
        keep.extend(
            ids.iter()
                .filter(|i| time_of(i).is_none())
                .map(|s| s.as_str()),
        );
        if let Some((_, newest)) = dated.first() {
            keep.insert(newest);
        }
        let last = self.keep_last.unwrap_or(0) as usize;
        keep.extend(dated.iter().take(last).map(|(_, id)| id.as_str()));
        if let (Some(Within(span)), Some((newest, _))) = (self.keep_within, dated.first()) {
            // A span past the calendar's start keeps everything.
            let cutoff = newest.checked_sub(span).ok();
            keep.extend(
                dated
                    .iter()
                    .filter(|(z, _)| cutoff.as_ref().is_none_or(|c| z >= c))
                    .map(|(_, id)| id.as_str()),
            );
        }
        let rules: [(Option<u32>, Bucket); 4] = [
            (self.keep_daily, day),
            (self.keep_weekly, week),
            (self.keep_monthly, month),
            (self.keep_yearly, year),
        ];
        for (limit, bucket) in rules {
            let limit = limit.unwrap_or(0) as usize;
            let mut seen = BTreeSet::new();
            for (z, id) in &dated {
                if seen.len() >= limit {
                    break;
                }
                if seen.insert(bucket(z)) {
                    keep.insert(id);
                }
            }
        }
        let mut out: Vec<String> = ids
            .iter()
            .filter(|i| !keep.contains(i.as_str()))
            .cloned()
            .collect();
        out.sort();
        out
    }
}

/// The instant a set id names (`20261121T021000Z`), if it is one.
pub fn time_of(id: &str) -> Option<Timestamp> {
    if !super::is_id(id) {
        return None;
    }
    jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", id)
        .ok()?
        .to_zoned(TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sets::id_at;
    use std::time::{Duration, UNIX_EPOCH};

    fn tokyo() -> TimeZone {
        jiff::tz::db().get("Asia/Tokyo").unwrap()
    }

    /// Set ids of the site times given (Tokyo), oldest first.
    fn ids_at(local: &[&str]) -> Vec<String> {
        local
            .iter()
            .map(|l| {
                let z = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M", l)
                    .unwrap()
                    .to_zoned(tokyo())
                    .unwrap();
                z.timestamp().strftime("%Y%m%dT%H%M%SZ").to_string()
            })
            .collect()
    }

    fn kept(r: &Retention, ids: &[String], protected: &[&str]) -> Vec<String> {
        let pruned = r.prune(ids, &tokyo(), protected);
        ids.iter()
            .filter(|i| !pruned.contains(i))
            .cloned()
            .collect()
    }

    #[test]
    fn set_ids_read_back_as_the_instant_they_name() {
        for secs in [0u64, 951_782_400, 1_795_227_000, 4_102_444_800] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let id = id_at(t);
            assert_eq!(time_of(&id).unwrap().as_second(), secs as i64, "{id}");
        }
        assert_eq!(time_of("20261321T021000Z"), None, "month 13");
        assert_eq!(time_of("latest"), None);
    }

    #[test]
    fn no_rule_keeps_everything_and_the_newest_always_survives() {
        let ids = ids_at(&["2026-11-01 02:10", "2026-11-02 02:10", "2026-11-03 02:10"]);
        assert!(Retention::default().prune(&ids, &tokyo(), &[]).is_empty());
        let zero = Retention {
            keep_last: Some(0),
            ..Default::default()
        };
        assert_eq!(kept(&zero, &ids, &[]), ids[2..]);
        // The newest set a restore test verified is protected by the caller.
        assert_eq!(
            kept(&zero, &ids, &[&ids[0]]),
            [&ids[0], &ids[2]].map(String::clone)
        );
        // An id that is not a set's (no time to judge it by) is never pruned.
        let mut odd = ids.clone();
        odd.push("20261399T000000Z".into());
        assert_eq!(zero.prune(&odd, &tokyo(), &[]), ids[..2]);
    }

    /// Each row: the rules, the sets (Tokyo time, oldest first), and the ones kept.
    #[test]
    fn rules_across_day_week_month_and_year_boundaries() {
        let sets = [
            "2024-12-31 23:30", // 0: 2024's last
            "2025-01-01 02:10", // 1: 2025's first, its id says 2024-12-31 (UTC)
            "2025-06-30 02:10", // 2
            "2025-12-31 02:10", // 3: 2025's last
            "2026-01-01 02:10", // 4: its id says 2025-12-31 (UTC)
            "2026-02-28 02:10", // 5: February's last
            "2026-03-01 02:10", // 6: Sunday, week 9
            "2026-03-02 00:30", // 7: Monday, week 10
            "2026-03-02 02:10", // 8: Monday, week 10
            "2026-03-02 23:50", // 9: Monday, week 10, its day's last
            "2026-03-03 02:10", // 10: Tuesday
        ];
        let ids = ids_at(&sets);
        let r = |f: fn(&mut Retention)| {
            let mut r = Retention::default();
            f(&mut r);
            r
        };
        let table: [(Retention, &[usize]); 9] = [
            (r(|r| r.keep_last = Some(3)), &[8, 9, 10]),
            // The newest of Tuesday, Monday (23:50, not the UTC day's) and Sunday.
            (r(|r| r.keep_daily = Some(3)), &[6, 9, 10]),
            // ISO weeks 10 and 9 (Saturday 28 February is in Sunday 1 March's week), then
            // 2026-W01, which 1 January opens.
            (r(|r| r.keep_weekly = Some(3)), &[4, 6, 10]),
            // March, February, January 2026 (1 January in Tokyo, though its id is December).
            (r(|r| r.keep_monthly = Some(3)), &[4, 5, 10]),
            // 2026, 2025 (its last set is 31 December), 2024 (its last is 23:30 on the 31st,
            // the UTC-dated 1 January set is 2025's).
            (r(|r| r.keep_yearly = Some(3)), &[0, 3, 10]),
            (r(|r| r.keep_yearly = Some(10)), &[0, 3, 10]),
            // Within a day of the newest: from 2026-03-02 02:10 on.
            (
                r(|r| r.keep_within = Some(Within::parse("1d").unwrap())),
                &[8, 9, 10],
            ),
            // Within a month of 3 March: from 3 February on.
            (
                r(|r| r.keep_within = Some(Within::parse("1mo").unwrap())),
                &[5, 6, 7, 8, 9, 10],
            ),
            // Rules add up.
            (
                r(|r| {
                    r.keep_last = Some(1);
                    r.keep_monthly = Some(2);
                    r.keep_yearly = Some(2);
                }),
                &[3, 5, 10],
            ),
        ];
        for (rules, want) in table {
            let want: Vec<String> = want.iter().map(|&i| ids[i].clone()).collect();
            assert_eq!(kept(&rules, &ids, &[]), want, "{rules:?}");
        }
        // Across a leap day: a year before 2028-02-29 is 2027-02-28.
        let leap = ids_at(&["2027-02-27 02:10", "2027-02-28 02:10", "2028-02-29 02:10"]);
        let year = r(|r| r.keep_within = Some(Within::parse("1y").unwrap()));
        assert_eq!(kept(&year, &leap, &[]), leap[1..]);
    }

    #[test]
    fn keep_within_refuses_minutes_and_says_how_to_write_months() {
        assert_eq!(Within::parse("10d").unwrap().to_string(), "10d");
        assert_eq!(Within::parse("1y 6mo").unwrap().to_string(), "1y 6mo");
        assert!(Within::parse("36h").is_ok());
        assert!(Within::parse("2w").is_ok());
        let e = Within::parse("6m").unwrap_err();
        assert!(e.contains("\"6mo\""), "{e}");
        assert!(Within::parse("0d").unwrap_err().contains("positive"));
        assert!(Within::parse("ten days").unwrap_err().contains("\"10d\""));
        let toml: Retention = toml::from_str("keep_within = \"10d\"\nkeep_monthly = 12").unwrap();
        assert_eq!(toml.keep_monthly, Some(12));
        let e = toml::from_str::<Retention>("keep_within = \"6m\"").unwrap_err();
        assert!(e.to_string().contains("6mo"), "{e}");
        // It goes into the journal and comes back.
        let back: Retention = serde_json::from_str(&serde_json::to_string(&toml).unwrap()).unwrap();
        assert_eq!(back, toml);
    }
}
