//! Which sets a job keeps: the newest `keep_last`, the newest of each of the last `keep_daily`
//! days that have a set, and the newest of each of the last `keep_weekly` ISO weeks (Monday to
//! Sunday) that have one. Days and weeks are UTC, as set ids are. A set any rule keeps is kept;
//! the newest good set is always kept.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A job's retention rules; all `None` keeps every set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep this many newest sets.
    pub keep_last: Option<u32>,
    /// Keep the newest set of each of this many days.
    pub keep_daily: Option<u32>,
    /// Keep the newest set of each of this many weeks.
    pub keep_weekly: Option<u32>,
}

impl Retention {
    /// Whether any rule is set (without one, nothing is pruned).
    pub fn is_set(&self) -> bool {
        self.keep_last.is_some() || self.keep_daily.is_some() || self.keep_weekly.is_some()
    }

    /// The sets to prune among good set ids (any order); the result is oldest first.
    pub fn prune(&self, ids: &[String]) -> Vec<String> {
        if !self.is_set() {
            return Vec::new();
        }
        let mut newest_first: Vec<&String> = ids.iter().collect();
        newest_first.sort_by(|a, b| b.cmp(a));
        let mut keep: BTreeSet<&String> = BTreeSet::new();
        if let Some(first) = newest_first.first() {
            keep.insert(first);
        }
        let last = self.keep_last.unwrap_or(0) as usize;
        keep.extend(newest_first.iter().take(last));
        for (limit, bucket) in [
            (self.keep_daily, day as fn(&str) -> i64),
            (self.keep_weekly, week),
        ] {
            let mut seen = BTreeSet::new();
            for id in &newest_first {
                if seen.len() >= limit.unwrap_or(0) as usize {
                    break;
                }
                if seen.insert(bucket(id)) {
                    keep.insert(id);
                }
            }
        }
        let mut out: Vec<String> = ids.iter().filter(|i| !keep.contains(i)).cloned().collect();
        out.sort();
        out
    }
}

/// Days since 1970-01-01 of a set id's date (Howard Hinnant's days-from-civil).
fn day(id: &str) -> i64 {
    let num = |r: std::ops::Range<usize>| id.get(r).and_then(|s| s.parse::<i64>().ok());
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(4..6), num(6..8)) else {
        return 0;
    };
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The Monday-to-Sunday week of a set id (1970-01-01 was a Thursday).
fn week(id: &str) -> i64 {
    (day(id) + 3).div_euclid(7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sets::id_at;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn days_match_the_id_clock() {
        for secs in [0u64, 951_782_400, 1_795_227_000, 4_102_444_800] {
            let id = id_at(UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(day(&id), (secs / 86_400) as i64, "{id}");
        }
        // 2026-11-23 is a Monday; 2026-11-22 a Sunday.
        assert_eq!(week("20261123T000000Z"), week("20261129T235959Z"));
        assert_ne!(week("20261122T235959Z"), week("20261123T000000Z"));
    }

    #[test]
    fn rules_combine_and_the_newest_survives() {
        let ids: Vec<String> = [
            "20261101T021000Z", // Sun, week 44
            "20261109T021000Z", // Mon, week 46
            "20261115T021000Z", // Sun, week 46
            "20261119T021000Z",
            "20261120T021000Z",
            "20261120T140000Z",
            "20261121T021000Z",
        ]
        .map(String::from)
        .to_vec();
        let none = Retention::default();
        assert!(none.prune(&ids).is_empty(), "no rule keeps everything");
        let last2 = Retention {
            keep_last: Some(2),
            ..none
        };
        assert_eq!(last2.prune(&ids), ids[..5]);
        let daily = Retention {
            keep_daily: Some(3),
            ..none
        };
        // The newest of 21st, 20th and 19th.
        assert_eq!(
            daily.prune(&ids),
            [&ids[0], &ids[1], &ids[2], &ids[4]].map(String::clone)
        );
        let weekly = Retention {
            keep_weekly: Some(3),
            ..none
        };
        // The newest of weeks 47, 46 and 44.
        assert_eq!(
            weekly.prune(&ids),
            [&ids[1], &ids[3], &ids[4], &ids[5]].map(String::clone)
        );
        let zero = Retention {
            keep_last: Some(0),
            ..none
        };
        assert_eq!(zero.prune(&ids), ids[..6], "the newest set is never pruned");
    }
}
