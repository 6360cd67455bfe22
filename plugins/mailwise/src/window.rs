//! mailwise's maintenance window: a start and end time of day in 10-minute steps.

use hokan_sdk::PlanError;
use std::fmt;

/// A daily window, minutes after midnight (site time). It may wrap past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: u16,
    end: u16,
}

impl Window {
    /// Parses `HH:MM-HH:MM`; both times must be on a 10-minute step and differ.
    pub fn parse(s: &str) -> Result<Window, PlanError> {
        let bad = |why: &str| {
            PlanError::BadParameter(format!(
                "window `{s}`: {why}; write it as HH:MM-HH:MM in 10-minute steps, e.g. 02:00-04:30"
            ))
        };
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| bad("no `-` between start and end"))?;
        let start = minutes(a.trim()).ok_or_else(|| bad("the start is not a time HH:MM"))?;
        let end = minutes(b.trim()).ok_or_else(|| bad("the end is not a time HH:MM"))?;
        if start % 10 != 0 || end % 10 != 0 {
            return Err(bad("mailwise sets maintenance windows in 10-minute steps"));
        }
        if start == end {
            return Err(bad("start and end are the same"));
        }
        Ok(Window { start, end })
    }

    /// The start as `HH:MM`.
    pub fn start(&self) -> String {
        hhmm(self.start)
    }

    /// The end as `HH:MM`.
    pub fn end(&self) -> String {
        hhmm(self.end)
    }
}

fn minutes(t: &str) -> Option<u16> {
    let (h, m) = t.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn hhmm(m: u16) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start(), self.end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        match Window::parse(s) {
            Err(PlanError::BadParameter(m)) => m,
            other => panic!("{s}: expected a bad parameter, got {other:?}"),
        }
    }

    #[test]
    fn windows_in_ten_minute_steps() {
        let w = Window::parse("02:00-04:30").unwrap();
        assert_eq!(
            (w.start(), w.end()),
            ("02:00".to_string(), "04:30".to_string())
        );
        // Past midnight is a window too.
        assert_eq!(
            Window::parse("23:50 - 00:20").unwrap().to_string(),
            "23:50-00:20"
        );
    }

    #[test]
    fn bad_windows_say_why() {
        assert!(err("02:05-04:00").contains("10-minute steps"));
        assert!(err("02:00").contains("no `-`"));
        assert!(err("2:00-04:00").contains("start is not a time"));
        assert!(err("02:00-24:00").contains("end is not a time"));
        assert!(err("03:00-03:00").contains("the same"));
    }
}
