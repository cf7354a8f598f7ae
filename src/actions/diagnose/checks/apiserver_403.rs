//! apiserver_403: the API server's 403 answers from its /metrics: the rate of now (two reads
//! at least [`FORBIDDEN_SAMPLE`] apart), else the average since it started.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::{Check, Outcome, Run, reason};
use crate::actions::Action as _;
use crate::actions::calico_rbac::CalicoRbac;
use crate::actions::diagnose::Diagnose;
use crate::actions::diagnose::report::{Finding, Severity, finding, fix};
use crate::client::Cluster;
use crate::error::{Error, Result};
use crate::k8s::duration::format_duration;

/// The first read of the 403 counters, when the run begins (a failure here is left to the
/// check's own read to report).
pub(super) async fn first_read(cluster: &Cluster) -> Option<(tokio::time::Instant, Forbidden)> {
    read_forbidden(cluster)
        .await
        .ok()
        .map(|f| (tokio::time::Instant::now(), f))
}

/// Runs the check, with the read of the counters made when the run began.
pub(super) async fn run(d: &Diagnose, run: &mut Run<'_>) -> Outcome {
    d.apiserver_403(&run.cx.cluster, run.first_forbidden.take())
        .await
        .map_err(reason)
}

/// What the API server's `/metrics` says about 403 answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Forbidden {
    /// Sum of `apiserver_request_total{code="403"}`.
    pub total: f64,
    /// The largest series: (verb, resource, count), largest first.
    pub top: Vec<(String, String, f64)>,
    /// `process_start_time_seconds`.
    pub started: Option<f64>,
}

/// Reads the 403 counters and the start time from Prometheus text.
#[must_use]
pub fn parse_forbidden(metrics: &str) -> Forbidden {
    let mut out = Forbidden::default();
    let mut series: BTreeMap<(String, String), f64> = BTreeMap::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("process_start_time_seconds ") {
            out.started = rest.trim().parse().ok();
            continue;
        }
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let labels = parse_labels(labels);
        if labels.get("code").map(String::as_str) != Some("403") {
            continue;
        }
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        out.total += value;
        let key = (
            labels.get("verb").cloned().unwrap_or_default(),
            labels.get("resource").cloned().unwrap_or_default(),
        );
        *series.entry(key).or_default() += value;
    }
    let mut top: Vec<(String, String, f64)> =
        series.into_iter().map(|((v, r), n)| (v, r, n)).collect();
    top.sort_by(|a, b| b.2.total_cmp(&a.2));
    top.truncate(3);
    out.top = top;
    out
}

/// `a="x",b="y"` into a map (values unescaped).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        value.push(match next {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                other => value.push(other),
            }
        }
        labels.insert(name.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    labels
}

/// The shortest time between the two reads of /metrics that give the 403 rate of now.
pub const FORBIDDEN_SAMPLE: std::time::Duration = std::time::Duration::from_secs(10);

/// How many more reads of /metrics may look for the API server process of the first read
/// (by its start time), when a load balancer handed the second to another.
const SAME_SERVER_TRIES: usize = 8;

/// The API server's 403 counters, read from its /metrics.
async fn read_forbidden(cluster: &Cluster) -> Result<Forbidden> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| Error::Internal {
            message: format!("a request for /metrics: {e}"),
        })?;
    let text = cluster
        .client
        .request_text(request)
        .await
        .map_err(cluster.error("get", "/metrics"))?;
    Ok(parse_forbidden(&text))
}

/// The 403 answers per minute between two reads, when both came from one API server process
/// (behind a load balancer the second may be another's, whose counter means nothing here).
#[allow(
    clippy::cast_precision_loss,
    reason = "counts and seconds far below 2^52; the rate is shown rounded"
)]
fn forbidden_per_minute(first: &Forbidden, second: &Forbidden, seconds: f64) -> Option<f64> {
    let same_process = first.started.is_some() && first.started == second.started;
    (same_process && second.total >= first.total && seconds > 0.0)
        .then(|| (second.total - first.total) * 60.0 / seconds)
}

impl Diagnose {
    /// `first`: the read made when the run began; the rate of now is taken from it to a read
    /// made at least [`FORBIDDEN_SAMPLE`] later.
    async fn apiserver_403(
        &self,
        cluster: &Cluster,
        first: Option<(tokio::time::Instant, Forbidden)>,
    ) -> Result<Vec<Finding>> {
        if let Some((at, _)) = &first {
            tokio::time::sleep_until(*at + FORBIDDEN_SAMPLE).await;
        }
        let mut second = read_forbidden(cluster).await?;
        // Behind a load balancer another API server may have answered: its counter says
        // nothing of the first's, so ask again, a few times, for the first one.
        if let Some((_, first)) = &first {
            for _ in 0..SAME_SERVER_TRIES {
                if first.started.is_none() || first.started == second.started {
                    break;
                }
                second = read_forbidden(cluster).await?;
            }
        }
        let now = Timestamp::now().as_second();
        let current = first.and_then(|(at, first)| {
            forbidden_per_minute(&first, &second, at.elapsed().as_secs_f64())
                .map(|rate| (rate, at.elapsed().as_secs()))
        });
        Ok(vec![forbidden_finding(
            &second,
            current,
            now,
            self.forbidden_per_minute,
            &cluster.endpoint,
        )])
    }
}

/// The finding for the 403 answers of the API server at `endpoint`: judged on `current` (per
/// minute, over the seconds given) when it could be measured, else on the average since the
/// server started.
#[must_use]
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "counts and seconds far below 2^52; rates are shown rounded"
)]
pub fn forbidden_finding(
    forbidden: &Forbidden,
    current: Option<(f64, u64)>,
    now: i64,
    per_minute: u32,
    endpoint: &str,
) -> Finding {
    let uptime = forbidden.started.map_or(0.0, |s| (now as f64 - s).max(1.0));
    let average = if uptime > 0.0 {
        forbidden.total / (uptime / 60.0)
    } else {
        0.0
    };
    let judged = current.map_or(average, |(rate, _)| rate);
    let high = (current.is_some() || uptime > 0.0) && judged > f64::from(per_minute);
    let top: Vec<String> = forbidden
        .top
        .iter()
        .map(|(verb, resource, n)| {
            format!(
                "{verb} {} ({n})",
                if resource.is_empty() {
                    "(no resource)"
                } else {
                    resource
                }
            )
        })
        .collect();
    let now_text = match current {
        Some((rate, seconds)) => format!("{rate:.1} a minute over the last {seconds}s"),
        None => "the rate of now unknown (one read, or two API servers answered)".into(),
    };
    let mut f = finding(
        Check::Apiserver403,
        if high {
            Severity::Warning
        } else {
            Severity::Info
        },
        format!("apiserver/{endpoint}"),
        format!(
            "{now_text}{}; {} answers 403 (Forbidden) since it started {} ago ({average:.1} a \
             minute){}",
            if high {
                format!(", above {per_minute}")
            } else {
                String::new()
            },
            forbidden.total,
            format_duration(uptime as i64),
            if top.is_empty() {
                String::new()
            } else {
                format!("; most: {}", top.join(", "))
            }
        ),
    );
    f.hint = if high {
        "something keeps asking for what it may not do; a controller crash-looping on 403s \
         (calico-kube-controllers in the incident) adds writes the datastore pays for: see \
         the calico_rbac finding, and the clients' logs"
            .into()
    } else {
        "nothing to do".into()
    };
    if high {
        f.fix = Some(fix(CalicoRbac::NAME, &json!({})));
    }
    f.data
        .insert("forbidden_total".into(), json!(forbidden.total));
    f.data.insert(
        "process_start_time_seconds".into(),
        json!(forbidden.started),
    );
    f.data.insert("uptime_seconds".into(), json!(uptime as i64));
    f.data.insert(
        "forbidden_per_minute_average".into(),
        json!((average * 10.0).round() / 10.0),
    );
    f.data.insert(
        "forbidden_per_minute".into(),
        json!(current.map(|(rate, _)| (rate * 10.0).round() / 10.0)),
    );
    f.data.insert(
        "measured_seconds".into(),
        json!(current.map(|(_, seconds)| seconds)),
    );
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_answers_are_summed_from_the_metrics() {
        let text = "# HELP apiserver_request_total x\n\
            apiserver_request_total{code=\"200\",component=\"apiserver\",resource=\"pods\",verb=\"LIST\"} 90\n\
            apiserver_request_total{code=\"403\",component=\"apiserver\",resource=\"pods\",verb=\"LIST\"} 700\n\
            apiserver_request_total{code=\"403\",component=\"apiserver\",resource=\"workloadendpoints\",verb=\"LIST\"} 20\n\
            apiserver_request_total{code=\"403\",component=\"\",resource=\"\",verb=\"GET\"} 1\n\
            process_start_time_seconds 1.7787e+09\n";
        let forbidden = parse_forbidden(text);
        assert!((forbidden.total - 721.0).abs() < f64::EPSILON);
        assert_eq!(forbidden.top[0], ("LIST".into(), "pods".into(), 700.0));
        assert_eq!(forbidden.started, Some(1.7787e9));
        // One read: judged on the average since start, 721 in 1h (12 a minute).
        let f = forbidden_finding(&forbidden, None, 1_778_703_600, 10, "https://vip");
        assert_eq!(f.severity, Severity::Warning, "{}", f.evidence);
        assert!(f.evidence.contains("721"), "{}", f.evidence);
        assert!(f.evidence.contains("1h"), "{}", f.evidence);
        let f = forbidden_finding(&forbidden, None, 1_778_703_600, 1000, "https://vip");
        assert_eq!(f.severity, Severity::Info);
        // A burst that ended: the same average, none now.
        let f = forbidden_finding(
            &forbidden,
            Some((0.0, 10)),
            1_778_703_600,
            10,
            "https://vip",
        );
        assert_eq!(f.severity, Severity::Info, "{}", f.evidence);
        assert!(
            f.evidence.contains("0.0 a minute over the last 10s"),
            "{}",
            f.evidence
        );
        // And one going on now.
        let f = forbidden_finding(
            &forbidden,
            Some((60.0, 10)),
            1_778_703_600,
            10,
            "https://vip",
        );
        assert_eq!(f.severity, Severity::Warning, "{}", f.evidence);
    }

    #[test]
    fn the_rate_of_now_needs_two_reads_of_one_api_server() {
        let read = |total: f64, started: f64| Forbidden {
            total,
            top: Vec::new(),
            started: Some(started),
        };
        assert_eq!(
            forbidden_per_minute(&read(100.0, 1.0), &read(110.0, 1.0), 10.0),
            Some(60.0)
        );
        // Another process (restarted, or another behind the load balancer).
        assert_eq!(
            forbidden_per_minute(&read(100.0, 1.0), &read(110.0, 2.0), 10.0),
            None
        );
        assert_eq!(
            forbidden_per_minute(&read(100.0, 1.0), &read(90.0, 1.0), 10.0),
            None
        );
    }

    #[test]
    fn labels_with_escapes_and_commas_are_read() {
        let labels = parse_labels(r#"a="x,y",b="q\"uote",code="403""#);
        assert_eq!(labels["a"], "x,y");
        assert_eq!(labels["b"], "q\"uote");
        assert_eq!(labels["code"], "403");
    }
}
