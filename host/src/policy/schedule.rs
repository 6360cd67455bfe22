//! A job's schedule: parsed and checked now, acted on by the scheduler later.

use serde::Serialize;
use std::fmt;

/// When a job runs, in the site's time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Schedule {
    /// Every day at a time.
    Daily {
        /// Minutes after midnight.
        at: u16,
    },
    /// On some weekdays at a time.
    Weekly {
        /// 0 = Sunday ... 6 = Saturday.
        days: Vec<u8>,
        /// Minutes after midnight.
        at: u16,
    },
    /// On some days of the month at a time.
    Monthly {
        /// 1..=31.
        days: Vec<u8>,
        /// Minutes after midnight.
        at: u16,
    },
    /// A five-field cron expression (minute hour day-of-month month day-of-week).
    Cron {
        /// The expression as written.
        expr: String,
    },
}

const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    /// Parses `daily at 02:00`, `weekly on mon,thu at 23:30`, `monthly on 1,15 at 04:00`, or a
    /// cron expression such as `30 2 * * 1-5`.
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            ["daily", "at", t] => Ok(Schedule::Daily { at: time(t)? }),
            ["weekly", "on", days, "at", t] => Ok(Schedule::Weekly {
                days: list(days, weekday)?,
                at: time(t)?,
            }),
            ["monthly", "on", days, "at", t] => Ok(Schedule::Monthly {
                days: list(days, |d| match d.parse::<u8>() {
                    Ok(n @ 1..=31) => Ok(n),
                    _ => Err(format!("`{d}` is not a day of the month (1-31)")),
                })?,
                at: time(t)?,
            }),
            [_, _, _, _, _] => {
                const FIELDS: [(&str, u32, u32); 5] = [
                    ("minute", 0, 59),
                    ("hour", 0, 23),
                    ("day of month", 1, 31),
                    ("month", 1, 12),
                    ("day of week", 0, 7),
                ];
                for (field, (name, lo, hi)) in words.iter().zip(FIELDS) {
                    cron_field(field, lo, hi).map_err(|e| format!("cron {name} `{field}`: {e}"))?;
                }
                Ok(Schedule::Cron {
                    expr: words.join(" "),
                })
            }
            _ => Err(format!(
                "`{s}` is not a schedule; write `daily at HH:MM`, `weekly on mon,thu at HH:MM`, \
                 `monthly on 1,15 at HH:MM` or a five-field cron expression"
            )),
        }
    }
}

/// A maintenance window of a product instance: the times of day its jobs may run in, on some
/// weekdays or every day. It may wrap past midnight (`22:00-02:00`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Minutes after midnight it opens.
    pub start: u16,
    /// Minutes after midnight it closes (up to 1440); at or before `start`, the next day.
    pub end: u16,
    /// The weekdays it opens on (0 = Sunday); `None` is every day.
    pub days: Option<Vec<u8>>,
}

impl Window {
    /// Parses `02:00-04:00` (every day) or `22:00-02:00 on sat,sun`.
    pub fn parse(s: &str) -> Result<Window, String> {
        let bad = |why: &str| {
            format!(
                "`{s}`: {why}; write HH:MM-HH:MM, optionally followed by `on` and weekdays, \
                 e.g. `02:00-04:30` or `22:00-02:00 on sat,sun`"
            )
        };
        let words: Vec<&str> = s.split_whitespace().collect();
        let (span, days) = match words.as_slice() {
            [span] => (*span, None),
            [span, "on", days] => (*span, Some(list(days, weekday).map_err(|e| bad(&e))?)),
            _ => return Err(bad("not a window")),
        };
        let (a, b) = span
            .split_once('-')
            .ok_or_else(|| bad("no `-` between the times"))?;
        let start = time(a).map_err(|e| bad(&e))?;
        let end = if b == "24:00" {
            1440
        } else {
            time(b).map_err(|e| bad(&e))?
        };
        if start == end {
            return Err(bad("it opens and closes at the same time"));
        }
        Ok(Window { start, end, days })
    }

    /// How long it is open, in minutes.
    pub fn minutes(&self) -> u32 {
        if self.end > self.start {
            u32::from(self.end - self.start)
        } else {
            1440 - u32::from(self.start) + u32::from(self.end)
        }
    }

    /// The window narrowed to multiples of `step` minutes (the start rounded up, the end
    /// down), or `None` when nothing of it is left.
    pub fn narrowed(&self, step: u32) -> Option<Window> {
        let step = step.max(1) as u16;
        let start = self.start.div_ceil(step) * step;
        let end = self.end / step * step;
        let w = Window {
            start: start % 1440,
            end,
            days: self.days.clone(),
        };
        let lost = (start - self.start) + (self.end - end);
        (u32::from(lost) < self.minutes()).then_some(w)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", hhmm(self.start), hhmm(self.end))?;
        if let Some(days) = &self.days {
            let names: Vec<&str> = days.iter().map(|d| WEEKDAYS[*d as usize]).collect();
            write!(f, " on {}", names.join(","))?;
        }
        Ok(())
    }
}

/// Minutes after midnight as HH:MM.
pub fn hhmm(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn weekday(d: &str) -> Result<u8, String> {
    WEEKDAYS
        .iter()
        .position(|w| w.eq_ignore_ascii_case(d))
        .map(|i| i as u8)
        .ok_or_else(|| format!("`{d}` is not a weekday (mon, tue, ... sun)"))
}

fn time(t: &str) -> Result<u16, String> {
    let bad = || format!("`{t}` is not a time of day HH:MM");
    let (h, m) = t.split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 || t.len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn list(s: &str, item: impl Fn(&str) -> Result<u8, String>) -> Result<Vec<u8>, String> {
    let mut v = s.split(',').map(item).collect::<Result<Vec<_>, _>>()?;
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

fn cron_field(f: &str, lo: u32, hi: u32) -> Result<(), String> {
    for part in f.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        if let Some(s) = step {
            match s.parse::<u32>() {
                Ok(n) if n > 0 => {}
                _ => return Err(format!("step `{s}` must be a positive number")),
            }
        }
        if range == "*" {
            continue;
        }
        let num = |x: &str| -> Result<u32, String> {
            match x.parse::<u32>() {
                Ok(n) if (lo..=hi).contains(&n) => Ok(n),
                _ => Err(format!("`{x}` is not a number from {lo} to {hi}")),
            }
        };
        match range.split_once('-') {
            Some((a, b)) => {
                if num(a)? > num(b)? {
                    return Err(format!("range `{range}` runs backwards"));
                }
            }
            None => {
                num(range)?;
            }
        }
    }
    Ok(())
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |m: &u16| format!("{:02}:{:02}", m / 60, m % 60);
        let join = |v: &[u8], name: &dyn Fn(u8) -> String| {
            v.iter().map(|d| name(*d)).collect::<Vec<_>>().join(",")
        };
        match self {
            Schedule::Daily { at } => write!(f, "daily at {}", t(at)),
            Schedule::Weekly { days, at } => write!(
                f,
                "weekly on {} at {}",
                join(days, &|d| WEEKDAYS[d as usize].to_string()),
                t(at)
            ),
            Schedule::Monthly { days, at } => {
                write!(
                    f,
                    "monthly on {} at {}",
                    join(days, &|d| d.to_string()),
                    t(at)
                )
            }
            Schedule::Cron { expr } => write!(f, "cron {expr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_calendars_round_trip() {
        for s in [
            "daily at 02:00",
            "weekly on mon,thu at 23:30",
            "monthly on 1,15 at 04:05",
        ] {
            assert_eq!(Schedule::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            Schedule::parse("weekly on THU,mon at 01:00").unwrap(),
            Schedule::Weekly {
                days: vec![1, 4],
                at: 60
            }
        );
    }

    #[test]
    fn cron_is_checked_field_by_field() {
        assert!(Schedule::parse("*/10 2-4 * * 1-5").is_ok());
        assert!(Schedule::parse("0 0 1,15 * 0").is_ok());
        let e = Schedule::parse("0 24 * * *").unwrap_err();
        assert!(e.contains("cron hour `24`"), "{e}");
        assert!(
            Schedule::parse("0 5-2 * * *")
                .unwrap_err()
                .contains("backwards")
        );
        assert!(
            Schedule::parse("*/0 * * * *")
                .unwrap_err()
                .contains("positive")
        );
    }

    #[test]
    fn nonsense_is_explained() {
        assert!(
            Schedule::parse("daily at 25:00")
                .unwrap_err()
                .contains("HH:MM")
        );
        assert!(
            Schedule::parse("weekly on funday at 01:00")
                .unwrap_err()
                .contains("weekday")
        );
        assert!(
            Schedule::parse("sometimes")
                .unwrap_err()
                .contains("cron expression")
        );
    }
}
