//! Service figures per department and service point for a period: cases, waiting and handling
//! times, the share of simple items finished within the target, and ratings. The arithmetic is a
//! pure function over case records, tested on its own.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::error::Result;

/// What the figures need of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseRecord {
    /// Department name.
    pub department: String,
    /// Service point name.
    pub point: String,
    /// Simple item.
    pub simple: bool,
    /// Final state name, if ended.
    pub state: String,
    /// Opened, ms.
    pub opened_at: i64,
    /// Entered its last queue, ms.
    pub queued_at: i64,
    /// Accepted, ms.
    pub accepted_at: Option<i64>,
    /// Decided, ms.
    pub decided_at: Option<i64>,
    /// Ended, ms.
    pub ended_at: Option<i64>,
    /// Rating score.
    pub score: Option<u8>,
}

/// The figures of one group of cases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Figures {
    /// Cases opened in the period.
    pub cases: u64,
    /// Of them, finished (issued or rejected).
    pub finished: u64,
    /// Median wait in the queue, seconds (accepted cases).
    pub waiting_median_seconds: Option<f64>,
    /// 90th percentile of the wait, seconds.
    pub waiting_p90_seconds: Option<f64>,
    /// Median from accept to decision, seconds.
    pub handling_median_seconds: Option<f64>,
    /// Simple-item cases opened.
    pub simple_cases: u64,
    /// Of them, finished within the target from opening.
    pub simple_within_target: u64,
    /// `simple_within_target / simple_cases`, when there are simple cases.
    pub simple_within_target_share: Option<f64>,
    /// Count of ratings per score, index 0 = score 1.
    pub ratings: [u64; 5],
}

/// Figures overall, per department and per service point.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// Period start, RFC 3339.
    pub from: String,
    /// Period end, RFC 3339.
    pub to: String,
    /// The simple-item target, minutes.
    pub target_minutes: u32,
    /// All cases.
    pub total: Figures,
    /// Per department name.
    pub by_department: BTreeMap<String, Figures>,
    /// Per service point name.
    pub by_point: BTreeMap<String, Figures>,
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1] as f64 / 1000.0)
}

/// Computes the figures of a group of cases.
pub fn figures<'a>(cases: impl IntoIterator<Item = &'a CaseRecord>, target_ms: i64) -> Figures {
    let mut f = Figures::default();
    let mut waits = Vec::new();
    let mut handling = Vec::new();
    for c in cases {
        f.cases += 1;
        let finished = matches!(c.state.as_str(), "issued" | "rejected");
        f.finished += u64::from(finished);
        if let Some(a) = c.accepted_at {
            waits.push(a - c.queued_at);
            if let Some(d) = c.decided_at {
                handling.push(d - a);
            }
        }
        if c.simple {
            f.simple_cases += 1;
            let within = finished && c.ended_at.is_some_and(|e| e - c.opened_at <= target_ms);
            f.simple_within_target += u64::from(within);
        }
        if let Some(s @ 1..=5) = c.score {
            f.ratings[usize::from(s - 1)] += 1;
        }
    }
    waits.sort_unstable();
    handling.sort_unstable();
    f.waiting_median_seconds = percentile(&waits, 0.5);
    f.waiting_p90_seconds = percentile(&waits, 0.9);
    f.handling_median_seconds = percentile(&handling, 0.5);
    f.simple_within_target_share =
        (f.simple_cases > 0).then(|| f.simple_within_target as f64 / f.simple_cases as f64);
    f
}

/// Loads the cases opened in `[from, to)`.
pub fn records(conn: &Connection, from: i64, to: i64) -> Result<Vec<CaseRecord>> {
    let mut stmt = conn.prepare(
        "SELECT d.name, p.name, i.simple, c.state, c.opened_at, c.queued_at, c.accepted_at, c.decided_at, c.ended_at, r.score
         FROM cases c JOIN departments d ON d.id = c.department_id JOIN service_points p ON p.id = c.point_id
         JOIN service_items i ON i.id = c.item_id LEFT JOIN ratings r ON r.case_id = c.id
         WHERE c.opened_at >= ?1 AND c.opened_at < ?2",
    )?;
    let rows = stmt
        .query_map(params![from, to], |r| {
            Ok(CaseRecord {
                department: r.get(0)?,
                point: r.get(1)?,
                simple: r.get(2)?,
                state: r.get(3)?,
                opened_at: r.get(4)?,
                queued_at: r.get(5)?,
                accepted_at: r.get(6)?,
                decided_at: r.get(7)?,
                ended_at: r.get(8)?,
                score: r.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// The report for a period.
pub fn report(records: &[CaseRecord], from: i64, to: i64, target_minutes: u32) -> Report {
    let target_ms = i64::from(target_minutes) * 60_000;
    let mut by_department: BTreeMap<String, Vec<&CaseRecord>> = BTreeMap::new();
    let mut by_point: BTreeMap<String, Vec<&CaseRecord>> = BTreeMap::new();
    for r in records {
        by_department
            .entry(r.department.clone())
            .or_default()
            .push(r);
        by_point.entry(r.point.clone()).or_default().push(r);
    }
    Report {
        from: crate::config::rfc3339(from),
        to: crate::config::rfc3339(to),
        target_minutes,
        total: figures(records, target_ms),
        by_department: by_department
            .into_iter()
            .map(|(k, v)| (k, figures(v, target_ms)))
            .collect(),
        by_point: by_point
            .into_iter()
            .map(|(k, v)| (k, figures(v, target_ms)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(
        simple: bool,
        state: &str,
        wait_s: i64,
        handle_s: i64,
        end_s: i64,
        score: Option<u8>,
    ) -> CaseRecord {
        CaseRecord {
            department: "户政".into(),
            point: "章镇警务站".into(),
            simple,
            state: state.into(),
            opened_at: 0,
            queued_at: 0,
            accepted_at: Some(wait_s * 1000),
            decided_at: Some((wait_s + handle_s) * 1000),
            ended_at: Some(end_s * 1000),
            score,
        }
    }

    #[test]
    fn figures_count_waits_handling_the_ten_minute_share_and_ratings() {
        let cases = [
            case(true, "issued", 30, 200, 300, Some(5)),
            case(true, "issued", 60, 400, 900, Some(2)),
            case(true, "cancelled", 90, 0, 100, None),
            case(false, "rejected", 120, 100, 2000, Some(4)),
        ];
        let f = figures(&cases, 600_000);
        assert_eq!(f.cases, 4);
        assert_eq!(f.finished, 3);
        assert_eq!(f.waiting_median_seconds, Some(60.0));
        assert_eq!(f.waiting_p90_seconds, Some(120.0));
        assert_eq!(f.handling_median_seconds, Some(100.0));
        assert_eq!((f.simple_cases, f.simple_within_target), (3, 1));
        assert!((f.simple_within_target_share.unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(f.ratings, [0, 1, 0, 1, 1]);
    }

    #[test]
    fn an_empty_period_has_no_medians_and_no_share() {
        let f = figures(&[], 600_000);
        assert_eq!(f, Figures::default());
    }
}
