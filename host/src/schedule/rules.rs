//! The scheduling rules, applied to one slot at a time: at most one run per product instance,
//! runs that must fit a maintenance window start only when the whole estimate fits, no run over
//! the product's own conflicting work, and a run that cannot start within its maximum start
//! delay is skipped, not run late.
//!
//! Both the preview (`hokan schedule`, with estimated run lengths) and the daemon (with the
//! runs that are really going on) ask a [`Board`] when a slot can start.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// Something that keeps an instance busy from `from` to `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// When it starts.
    pub from: Timestamp,
    /// When it ends (estimated, for runs).
    pub until: Timestamp,
    /// What it is, for the operator: `job mailwise (backup)`, `mailwise's db-check`.
    pub what: String,
}

/// What a slot needs to start.
#[derive(Debug, Clone)]
pub struct Need<'a> {
    /// The slot's time.
    pub slot: Timestamp,
    /// Not before this (the daemon's clock; the slot for a preview).
    pub not_before: Timestamp,
    /// The estimated length of the run.
    pub estimate: SignedDuration,
    /// The latest start, after the slot.
    pub max_delay: SignedDuration,
    /// The windows the run must fit in, in order; `None` when it needs none.
    pub windows: Option<&'a [(Timestamp, Timestamp)]>,
    /// How the window reads in messages (`02:00-04:00`).
    pub window_text: &'a str,
    /// The site's time zone, for times in messages.
    pub tz: &'a TimeZone,
}

/// When a slot starts, or why it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It starts at `at`; `waited` says what it waited for, if it did.
    Start {
        /// The start.
        at: Timestamp,
        /// What held it back until then, in order.
        waited: Vec<String>,
    },
    /// It does not run.
    Skip {
        /// Why, for the operator.
        reason: String,
    },
}

/// The earliest start of a slot, given what keeps its instance busy (runs and conflicting
/// activities, in any order).
pub fn earliest(need: &Need<'_>, busy: &[&Busy]) -> Decision {
    let latest = need.slot + need.max_delay;
    let mut t = need.slot.max(need.not_before);
    let mut waited: Vec<String> = Vec::new();
    let note = |w: String, waited: &mut Vec<String>| {
        if waited.last() != Some(&w) {
            waited.push(w);
        }
    };
    // Each pass moves `t` later or accepts it; the busy list and the windows are finite.
    loop {
        if t > latest {
            // Already late on the first look (the daemon's clock): say what is in the way now.
            let now_busy = busy
                .iter()
                .filter(|b| b.from <= t && t < b.until)
                .max_by_key(|b| b.until)
                .map(|b| format!("{} until {}", b.what, local_text(b.until, need.tz)));
            let why = waited
                .last()
                .cloned()
                .or(now_busy)
                .unwrap_or_else(|| "it was not started in time".into());
            return Decision::Skip {
                reason: format!(
                    "could not start within its maximum start delay of {} ({why})",
                    human(need.max_delay)
                ),
            };
        }
        let end = t + need.estimate;
        if let Some(b) = busy
            .iter()
            .filter(|b| b.from < end && t < b.until)
            .max_by_key(|b| b.until)
        {
            note(
                format!("{} until {}", b.what, local_text(b.until, need.tz)),
                &mut waited,
            );
            t = b.until;
            continue;
        }
        if let Some(windows) = need.windows {
            if windows.iter().any(|&(o, c)| o <= t && end <= c) {
                return Decision::Start { at: t, waited };
            }
            let fits = need.estimate
                <= windows
                    .iter()
                    .map(|(o, c)| c.duration_since(*o))
                    .max()
                    .unwrap_or_default();
            match windows.iter().find(|(o, _)| *o > t) {
                Some(&(o, _)) if fits => {
                    let why = if windows.iter().any(|&(o, c)| o <= t && t < c) {
                        format!(
                            "the rest of the window {} is shorter than the estimate of {}",
                            need.window_text,
                            human(need.estimate)
                        )
                    } else {
                        format!("the window {}", need.window_text)
                    };
                    note(why, &mut waited);
                    t = o;
                    continue;
                }
                _ => {
                    return Decision::Skip {
                        reason: if fits {
                            format!("no window {} opens in time", need.window_text)
                        } else {
                            format!(
                                "its estimate of {} does not fit the window {}",
                                human(need.estimate),
                                need.window_text
                            )
                        },
                    };
                }
            }
        }
        return Decision::Start { at: t, waited };
    }
}

/// An instant as the site reads it: `2026-11-21 02:40 JST`.
pub fn local_text(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone()).strftime("%F %H:%M %Z").to_string()
}

/// `1h 30m`, `45m`, `20s`.
pub fn human(d: SignedDuration) -> String {
    humantime::format_duration(d.unsigned_abs()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(hm: &str) -> Timestamp {
        format!("2026-11-21T{hm}:00Z").parse().unwrap()
    }

    fn mins(m: i64) -> SignedDuration {
        SignedDuration::from_mins(m)
    }

    static UTC: TimeZone = TimeZone::UTC;

    fn need<'a>(
        slot: &str,
        estimate: i64,
        delay: i64,
        windows: Option<&'a [(Timestamp, Timestamp)]>,
    ) -> Need<'a> {
        Need {
            slot: t(slot),
            not_before: t(slot),
            estimate: mins(estimate),
            max_delay: mins(delay),
            windows,
            window_text: "02:00-04:00",
            tz: &UTC,
        }
    }

    fn busy(from: &str, until: &str, what: &str) -> Busy {
        Busy {
            from: t(from),
            until: t(until),
            what: what.into(),
        }
    }

    #[test]
    fn a_free_instance_starts_on_the_slot() {
        assert_eq!(
            earliest(&need("02:10", 30, 60, None), &[]),
            Decision::Start {
                at: t("02:10"),
                waited: vec![]
            }
        );
    }

    #[test]
    fn a_busy_instance_waits_then_skips_past_the_delay() {
        let a = busy("02:00", "02:40", "job other (backup)");
        let got = earliest(&need("02:10", 30, 60, None), &[&a]);
        assert_eq!(
            got,
            Decision::Start {
                at: t("02:40"),
                waited: vec!["job other (backup) until 2026-11-21 02:40 UTC".into()]
            }
        );
        let long = busy("02:00", "03:30", "job other (backup)");
        match earliest(&need("02:10", 30, 60, None), &[&long]) {
            Decision::Skip { reason } => {
                assert!(reason.contains("maximum start delay of 1h"), "{reason}");
                assert!(reason.contains("job other (backup) until"), "{reason}");
            }
            d => panic!("{d:?}"),
        }
        // Two blockers in the way: it waits for the one that ends last.
        let b = busy("02:35", "02:50", "mailwise's db-check");
        assert_eq!(
            earliest(&need("02:10", 30, 60, None), &[&a, &b]),
            Decision::Start {
                at: t("02:50"),
                waited: vec!["mailwise's db-check until 2026-11-21 02:50 UTC".into()]
            }
        );
        // Chained: the first blocker's end runs into a second one.
        let c = busy("02:45", "03:00", "job third (backup)");
        assert_eq!(
            earliest(&need("02:10", 30, 60, None), &[&a, &c]),
            Decision::Start {
                at: t("03:00"),
                waited: vec![
                    "job other (backup) until 2026-11-21 02:40 UTC".into(),
                    "job third (backup) until 2026-11-21 03:00 UTC".into()
                ]
            }
        );
    }

    #[test]
    fn a_run_starts_only_when_its_whole_estimate_fits_the_window() {
        let w = &[(t("02:00"), t("04:00"))][..];
        // Before the window: waits for it.
        assert_eq!(
            earliest(&need("01:30", 60, 60, Some(w)), &[]),
            Decision::Start {
                at: t("02:00"),
                waited: vec!["the window 02:00-04:00".into()]
            }
        );
        // Inside, fits.
        assert_eq!(
            earliest(&need("02:10", 60, 60, Some(w)), &[]),
            Decision::Start {
                at: t("02:10"),
                waited: vec![]
            }
        );
        // Inside, but the rest of the window is too short and no later window: skipped.
        match earliest(&need("03:30", 60, 60, Some(w)), &[]) {
            Decision::Skip { reason } => assert!(
                reason.contains("no window 02:00-04:00 opens in time"),
                "{reason}"
            ),
            d => panic!("{d:?}"),
        }
        // Longer than any window: skipped with that reason.
        match earliest(&need("02:00", 180, 60, Some(w)), &[]) {
            Decision::Skip { reason } => {
                assert!(reason.contains("estimate of 3h does not fit"), "{reason}")
            }
            d => panic!("{d:?}"),
        }
        // A conflict inside the window pushes it past the window's end: skipped.
        let check = busy("02:00", "03:30", "mailwise's db-check");
        match earliest(&need("02:00", 60, 120, Some(w)), &[&check]) {
            Decision::Skip { reason } => assert!(reason.contains("no window"), "{reason}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn the_daemons_clock_can_be_later_than_the_slot() {
        let mut n = need("02:10", 30, 60, None);
        n.not_before = t("02:30");
        assert_eq!(
            earliest(&n, &[]),
            Decision::Start {
                at: t("02:30"),
                waited: vec![]
            }
        );
        n.not_before = t("03:11");
        assert!(matches!(earliest(&n, &[]), Decision::Skip { .. }));
    }
}
