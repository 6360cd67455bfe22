//! mailwise's maintenance window, as a plan sets it: a start and an end time of day in 10-minute
//! steps ("時間 メンテナンス時間の開始時間と終了時間を選択します。時間は10分単位で設定できます。"),
//! which mailwise repeats every day until it is released ("解除するまで設定した時間に毎日繰り返され
//! ます"). Users are kept out only inside it ("メンテナンス時間の前後で、メールワイズにアクセスでき
//! る"), so a plan that reads or changes data must run inside the one it sets.

use hokan_sdk::{LocalTime, PlanError, TimeWindow};

/// mailwise's step for the window's times.
const STEP_MS: i64 = 10 * 60 * 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The window a plan sets: its instants, and its times of day as mailwise takes them.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The instants it covers.
    pub bounds: TimeWindow,
    /// Its start, `HH:MM` in the site's time.
    pub start: String,
    /// Its end, `HH:MM` in the site's time.
    pub end: String,
}

impl Planned {
    /// `HH:MM-HH:MM`, as the operator reads it.
    pub fn text(&self) -> String {
        format!("{}-{}", self.start, self.end)
    }
}

/// The window of a run that takes about `estimate_ms` from `now_ms`. `given` is the one the
/// host gave it (a scheduled slot's opening of the job's `window`, or `--window`): it must be on
/// mailwise's steps, and the run must fit in what is left of it. Without one, the run's own:
/// from now, rounded down to a step, to now plus the estimate, rounded up. `local` tells the
/// site's time of an instant.
pub fn for_run(
    given: Option<TimeWindow>,
    now_ms: i64,
    estimate_ms: i64,
    local: impl Fn(i64) -> Result<LocalTime, PlanError>,
) -> Result<Planned, PlanError> {
    let bounds = match given {
        Some(w) => {
            let (start, end) = (local(w.start_ms)?, local(w.end_ms)?);
            for (what, t) in [("start", &start), ("end", &end)] {
                if t.minute % 10 != 0 || t.second != 0 {
                    return Err(PlanError::BadParameter(format!(
                        "the window's {what}, {}, is not on mailwise's 10-minute steps \
                         (時間は10分単位で設定できます): give the job a window such as 02:00-04:30",
                        hhmm(t)
                    )));
                }
            }
            if w.end_ms - w.start_ms >= DAY_MS {
                return Err(PlanError::BadParameter(
                    "the window lasts a day or more; mailwise keeps a window as two times of day"
                        .into(),
                ));
            }
            let left = w.end_ms - now_ms.max(w.start_ms);
            if left < estimate_ms {
                return Err(PlanError::Refused(format!(
                    "this run takes about {} and the window {}-{} leaves {}: users would be back \
                     in mailwise before it ends. Run it in a window with room for it (the job's \
                     `window`, or --window), or without one: then it sets its own from now.",
                    minutes(estimate_ms),
                    hhmm(&start),
                    hhmm(&end),
                    minutes(left.max(0))
                )));
            }
            w
        }
        None => {
            let t = local(now_ms)?;
            let into_step = (i64::from(t.minute % 10) * 60 + i64::from(t.second)) * 1000
                + now_ms.rem_euclid(1000);
            let start_ms = now_ms - into_step;
            let steps = (now_ms - start_ms + estimate_ms.max(0) + STEP_MS - 1) / STEP_MS;
            let end_ms = start_ms + steps.max(1) * STEP_MS;
            if end_ms - start_ms >= DAY_MS {
                return Err(PlanError::Refused(format!(
                    "this run takes about {}, more than the day a mailwise window can cover",
                    minutes(estimate_ms)
                )));
            }
            TimeWindow { start_ms, end_ms }
        }
    };
    Ok(Planned {
        start: hhmm(&local(bounds.start_ms)?),
        end: hhmm(&local(bounds.end_ms)?),
        bounds,
    })
}

fn hhmm(t: &LocalTime) -> String {
    format!("{:02}:{:02}", t.hour, t.minute)
}

/// A duration for people, in whole minutes (rounded up).
pub fn minutes(ms: i64) -> String {
    let m = (ms.max(0) + 59_999) / 60_000;
    match m {
        0..60 => format!("{m} min"),
        _ => format!("{} h {:02} min", m / 60, m % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokyo's clocks: UTC+9, no daylight saving.
    fn tokyo(ms: i64) -> Result<LocalTime, PlanError> {
        let s = (ms + 9 * 3_600_000).div_euclid(1000);
        let day = s.rem_euclid(86_400);
        Ok(LocalTime {
            year: 2026,
            month: 12,
            day: 2,
            hour: (day / 3600) as u8,
            minute: (day % 3600 / 60) as u8,
            second: (day % 60) as u8,
        })
    }

    /// 2026-12-02 at `h:m:s` in Tokyo, in ms.
    fn at(h: i64, m: i64, s: i64) -> i64 {
        1_796_169_600_000 + ((h - 9) * 3600 + m * 60 + s) * 1000
    }

    #[test]
    fn a_run_without_a_window_sets_one_from_now_for_its_estimate_in_ten_minute_steps() {
        // A restore at 11:03:20 that takes 47 minutes: 11:00 to 11:59 rounds out to 12:00.
        let w = for_run(None, at(11, 3, 20), 47 * 60_000, tokyo).unwrap();
        assert_eq!(w.text(), "11:00-12:00");
        assert_eq!(w.bounds.start_ms, at(11, 0, 0));
        assert_eq!(w.bounds.end_ms, at(12, 0, 0));
        // On a step, with nothing to do, it still covers one step.
        let w = for_run(None, at(23, 50, 0), 0, tokyo).unwrap();
        assert_eq!(w.text(), "23:50-00:00");
        // Past midnight.
        let w = for_run(None, at(23, 55, 0), 30 * 60_000, tokyo).unwrap();
        assert_eq!(w.text(), "23:50-00:30");
    }

    #[test]
    fn a_given_window_is_the_one_set_if_on_steps_and_long_enough() {
        let given = TimeWindow {
            start_ms: at(2, 0, 0),
            end_ms: at(4, 0, 0),
        };
        let w = for_run(Some(given), at(2, 10, 0), 40 * 60_000, tokyo).unwrap();
        assert_eq!(w.text(), "02:00-04:00");
        assert_eq!(
            (w.bounds.start_ms, w.bounds.end_ms),
            (given.start_ms, given.end_ms)
        );
        // Started late in it: 15 minutes are left for a 40-minute run.
        match for_run(Some(given), at(3, 45, 0), 40 * 60_000, tokyo) {
            Err(PlanError::Refused(m)) => {
                assert!(
                    m.contains("takes about 40 min") && m.contains("leaves 15 min"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        let off_step = TimeWindow {
            start_ms: at(2, 5, 0),
            end_ms: at(4, 0, 0),
        };
        match for_run(Some(off_step), at(2, 10, 0), 60_000, tokyo) {
            Err(PlanError::BadParameter(m)) => assert!(m.contains("02:05"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn minutes_for_people() {
        assert_eq!(minutes(0), "0 min");
        assert_eq!(minutes(61_000), "2 min");
        assert_eq!(minutes(125 * 60_000), "2 h 05 min");
    }
}
