//! `docs/benchmarks.md` from the result files of a run: a table and an SVG plot per scenario.
//! Pure: results and texts in, Markdown and SVG out; the caller reads and writes the files.

use std::fmt::Write;

use crate::baseline::BaselineResult;
use crate::joins::JoinsResult;
use crate::measure::Percentiles;
use crate::run::RunResult;
use crate::signaling_bench::SignalingResult;

/// A line plot of `points` as a self-contained SVG (no plotting library).
pub fn svg_line(title: &str, x_label: &str, y_label: &str, points: &[(f64, f64)]) -> String {
    let (w, h, left, bottom, top, right) = (640.0, 320.0, 70.0, 40.0, 30.0, 20.0);
    let max_x = points.iter().map(|p| p.0).fold(0.0f64, f64::max).max(1e-9);
    let max_y = points.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let x = |v: f64| left + v / max_x * (w - left - right);
    let y = |v: f64| h - bottom - v / max_y * (h - bottom - top);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="18" text-anchor="middle" font-size="14">{}</text>"##,
        w / 2.0,
        escape(title)
    );
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"##,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for i in 0..=4 {
        let v = max_y * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="end">{}</text><line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#ddd"/>"##,
            left - 5.0,
            y(v) + 4.0,
            short(v),
            y(v),
            w - right,
            y(v)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{}" y="{}" text-anchor="middle">{}</text><text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"##,
        (left + w - right) / 2.0,
        h - 8.0,
        escape(x_label),
        h / 2.0,
        h / 2.0,
        escape(y_label)
    );
    let path: Vec<String> = points
        .iter()
        .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
        .collect();
    let _ = write!(
        svg,
        r##"<polyline fill="none" stroke="#1565c0" stroke-width="2" points="{}"/>"##,
        path.join(" ")
    );
    for (px, py) in points {
        let _ = write!(
            svg,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#1565c0"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"##,
            x(*px),
            y(*py),
            x(*px),
            h - bottom + 14.0,
            short(*px)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// The plot of a scenario's result: packets out per load for a ramp, per second otherwise.
pub fn scenario_plot(result: &RunResult) -> String {
    let name = format!("{} on {}", scenario_name(result), result.target);
    if result.steps.len() > 1 {
        let points: Vec<(f64, f64)> = result
            .steps
            .iter()
            .map(|s| (f64::from(s.load), s.figures.packets_out_per_s))
            .collect();
        svg_line(
            &format!("{name}: relay packets out per second by load"),
            &result.unit,
            "packets/s out",
            &points,
        )
    } else {
        let points: Vec<(f64, f64)> = result
            .steps
            .iter()
            .flat_map(|s| {
                s.samples
                    .iter()
                    .map(|p| (p.t_s, p.figures.packets_out_per_s))
            })
            .collect();
        svg_line(
            &format!("{name}: relay packets out per second over the run"),
            "seconds",
            "packets/s out",
            &points,
        )
    }
}

/// A scenario's name, marked when its publishers sent simulcast.
fn scenario_name(result: &RunResult) -> String {
    if result.simulcast {
        format!("{} (simulcast, 3 layers)", result.scenario.name())
    } else {
        result.scenario.name().to_string()
    }
}

/// The heading and table of one scenario's result.
fn scenario_table(md: &mut String, result: &RunResult) {
    let _ = writeln!(
        md,
        "### {} on {} ({}, {}{})\n",
        scenario_name(result),
        result.target,
        result.unit,
        if result.scenario == crate::Scenario::AudioOnly {
            "Opus-sized audio at 50 packets/s per publisher".to_string()
        } else {
            format!(
                "video {} kb/s per publisher{}",
                result.video_kbps,
                if result.simulcast {
                    " in the top layer, a third and a ninth in the others; subscribers report twice the top layer's rate"
                } else {
                    ""
                }
            )
        },
        if result.ramp {
            format!(
                "; ramp until loss > {:.0} % or p99 > {} ms: highest held **{}**",
                result.limits.max_loss * 100.0,
                result.limits.max_p99_ms,
                result.highest_held.map_or("none".into(), |l| l.to_string())
            )
        } else {
            String::new()
        }
    );
    md.push_str("| load | rooms | streams | joined | pkt/s in | pkt/s out | Mb/s out | loss | latency p50/p95/p99 ms | join p50/max ms | relay CPU | pkt/s out per relay core | relay peak MiB | KiB per stream | generator CPU | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for s in &result.steps {
        let f = &s.figures;
        let latency = three_percentiles(f.added_latency_ms, 1);
        let join = s
            .join_ms
            .map_or("–".into(), |p| format!("{:.0} / {:.0}", p.p50, p.max));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {}/{} | {:.0} | {:.0} | {:.1} | {:.2} % | {latency} | {join} | {} | {} | {} | {} | {:.0} % | {} |",
            s.load,
            s.rooms,
            s.subscriber_streams,
            s.participants - s.failed_peers,
            s.participants,
            f.packets_in_per_s,
            f.packets_out_per_s,
            f.bitrate_out_mbps,
            f.loss * 100.0,
            f.server_cpu_cores
                .map_or("–".into(), |c| format!("{:.0} %", c * 100.0)),
            opt(s.packets_out_per_relay_core, 0),
            opt(s.server_peak_memory_kib.map(|k| k as f64 / 1024.0), 0),
            opt(s.memory_per_subscriber_stream_kib, 0),
            f.generator_cpu_cores * 100.0,
            s.broken_by.as_deref().unwrap_or("held"),
        );
    }
}

/// `p50 / p95 / p99`, or a dash.
fn three_percentiles(p: Option<Percentiles>, digits: usize) -> String {
    p.map_or("–".into(), |p| {
        format!(
            "{:.digits$} / {:.digits$} / {:.digits$}",
            p.p50, p.p95, p.p99
        )
    })
}

/// The joins-per-second paragraph and table.
fn joins_table(md: &mut String, j: &JoinsResult) {
    let _ = writeln!(
        md,
        "**Joins per second.** {} rooms, each with its agent already in the call and publishing; then {} participants send `call.join` on sockets opened beforehand, at most {} in flight at once, each publishing Opus and VP8. A join is done at its first media packet received (the host's); the burst runs from the first `call.join` to the last join's first media. *Connected* is `call.join` to the peer connection's ICE and DTLS being up.\n\n| joins | completed | failed | burst s | joins/s | join p50/p95/p99 ms | connected p50/p95/p99 ms | server CPU | generator CPU |\n|---|---|---|---|---|---|---|---|---|\n| {} | {} | {} | {:.2} | {:.1} | {} | {} | {} | {:.0} % |\n",
        j.rooms,
        j.joins,
        j.concurrency,
        j.joins,
        j.completed,
        j.failed_joins,
        j.burst_s,
        j.joins_per_s,
        three_percentiles(j.join_ms, 0),
        three_percentiles(j.connected_ms, 0),
        j.server_cpu_cores
            .map_or("–".into(), |c| format!("{:.0} %", c * 100.0)),
        j.generator_cpu_cores * 100.0,
    );
}

/// The inputs of the page.
#[derive(Debug, Default)]
pub struct PageInputs {
    /// When and on what (free text: CPU model, cores, kernel, load on the machine).
    pub machine: String,
    /// The exact commands run.
    pub commands: String,
    /// Scenario results, with the file name of each plot (relative to the page).
    pub scenarios: Vec<(RunResult, String)>,
    /// The same scenarios against Janus, with their plots.
    pub janus: Vec<(RunResult, String)>,
    /// The raw UDP baseline.
    pub baseline: Option<BaselineResult>,
    /// The signaling benchmark.
    pub signaling: Option<SignalingResult>,
    /// Joins per second.
    pub joins: Option<JoinsResult>,
    /// The esign benchmark's output.
    pub esign: Option<String>,
    /// Notes written by hand (goals missed, where time goes); kept across runs.
    pub notes: String,
}

/// The Markdown page.
pub fn page(inputs: &PageInputs) -> String {
    let mut md = String::from(
        "# Benchmarks\n\nWritten by `scripts/bench` (do not edit by hand, except the notes file it includes). \
Relay and load generator run on one machine, pinned to separate cores with `taskset`, so relay CPU \
is measured on its own and the generator's own CPU is reported beside it: a generator near 100 % \
means the figures are the generator's limit, not the relay's.\n\n## Machine\n\n```\n",
    );
    md.push_str(inputs.machine.trim_end());
    md.push_str("\n```\n\n## Commands\n\n```sh\n");
    md.push_str(inputs.commands.trim_end());
    md.push_str("\n```\n\n");
    md.push_str("## Relay scenarios\n\n");
    md.push_str("Latency is the publisher-to-subscriber delay of stamped packets (send time at the end of each payload): it includes both test peers' webrtc-rs stacks as well as the relay. Memory per stream is the server's resident-memory growth over the forwarded streams. `fanout` is 1 publisher → N subscribers spread over ⌈N/7⌉ rooms of one publisher and up to 7 receive-only subscribers (a room holds 8).\n\n");
    for (result, plot) in &inputs.scenarios {
        scenario_table(&mut md, result);
        let _ = writeln!(md, "\n![{}]({plot})\n", scenario_name(result));
        let janus = inputs
            .janus
            .iter()
            .find(|(j, _)| j.scenario == result.scenario && j.simulcast == result.simulcast);
        if let Some((janus, janus_plot)) = janus {
            md.push_str("Janus 1.1.2 (VideoRoom), the same load from the same generator in the same run:\n\n");
            scenario_table(&mut md, janus);
            let best = |r: &RunResult| {
                r.steps
                    .iter()
                    .filter_map(|s| s.packets_out_per_relay_core)
                    .fold(0.0f64, f64::max)
            };
            if best(janus) > 0.0 {
                let _ = writeln!(
                    md,
                    "\nPackets/s out per server core: cloudhelp {:.0}, Janus {:.0} (**{:.2}×** Janus; goal ≥ 2×). Highest load held: cloudhelp {}, Janus {}.",
                    best(result),
                    best(janus),
                    best(result) / best(janus),
                    result.highest_held.map_or("none".into(), |l| l.to_string()),
                    janus.highest_held.map_or("none".into(), |l| l.to_string()),
                );
            }
            let _ = writeln!(md, "\n![janus {}]({janus_plot})\n", scenario_name(janus));
        }
    }
    if let Some(b) = &inputs.baseline {
        let _ = writeln!(
            md,
            "## Raw UDP fan-out baseline (the physical limit)\n\nOne thread reads a socket and sends each {}-byte packet to {} receivers in one `sendmmsg` call; no SRTP, no WebRTC; a sender floods it, so this is the most one relay core moves here.\n\n| pkt/s in | pkt/s out | relay thread CPU | pkt/s out per core | received pkt/s |\n|---|---|---|---|---|\n| {:.0} | {:.0} | {:.0} % | {:.0} | {:.0} |\n",
            b.payload,
            b.fanout,
            b.packets_in_per_s,
            b.packets_out_per_s,
            b.relay_cpu_cores * 100.0,
            b.packets_out_per_relay_core,
            b.packets_received_per_s
        );
        for (result, _) in &inputs.scenarios {
            let best = result
                .steps
                .iter()
                .filter_map(|s| s.packets_out_per_relay_core)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            if let Some(best) = best.filter(|_| b.packets_out_per_relay_core > 0.0) {
                let _ = writeln!(
                    md,
                    "- `{}`: {:.0} packets/s out per relay core = **{:.1} %** of the baseline.",
                    scenario_name(result),
                    best,
                    best / b.packets_out_per_relay_core * 100.0
                );
            }
        }
        md.push('\n');
    }
    if inputs.signaling.is_some() || inputs.joins.is_some() {
        md.push_str("## Signaling\n\n");
    }
    if let Some(s) = &inputs.signaling {
        let _ = writeln!(
            md,
            "{} authenticated approver WebSockets held ({} failed); {} queue events (cases opened one after another), each delivered to every connection. Delivery time runs from sending `POST /api/cases` to the socket's `queue.added`.\n\n| connections | connects/s | KiB per connection | deliveries | delivery p50/p95/p99 ms |\n|---|---|---|---|---|\n| {} | {:.0} | {} | {}/{} | {} |\n",
            s.connections,
            s.failed_connections,
            s.events,
            s.connections,
            s.connects_per_s,
            opt(s.memory_per_connection_kib, 1),
            s.deliveries,
            s.deliveries_expected,
            three_percentiles(s.delivery_ms, 1),
        );
    }
    if let Some(j) = &inputs.joins {
        joins_table(&mut md, j);
    }
    if let Some(esign) = &inputs.esign {
        md.push_str("## Signing (esign)\n\n`cargo bench -p esign --bench esign` output:\n\n```\n");
        md.push_str(esign.trim_end());
        md.push_str("\n```\n\n");
    }
    if !inputs.notes.trim().is_empty() {
        md.push_str("## Notes\n\n");
        md.push_str(inputs.notes.trim_end());
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_is_one_svg_with_a_point_per_value_and_escaped_labels() {
        let svg = svg_line("a <b>", "x", "y", &[(1.0, 10.0), (2.0, 30.0), (4.0, 20.0)]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("a &lt;b&gt;"));
        assert!(!svg.contains("NaN"));
        assert!(!svg_line("empty", "x", "y", &[]).contains("NaN"));
    }

    #[test]
    fn joins_per_second_get_a_row_in_the_signaling_section() {
        let joins = JoinsResult {
            rooms: 5,
            joins: 10,
            concurrency: 8,
            completed: 9,
            failed_joins: 1,
            burst_s: 1.5,
            joins_per_s: 6.0,
            join_ms: Some(Percentiles {
                p50: 420.0,
                p95: 610.0,
                p99: 640.0,
                max: 650.0,
            }),
            connected_ms: None,
            server_cpu_cores: Some(0.25),
            generator_cpu_cores: 0.5,
        };
        let md = page(&PageInputs {
            joins: Some(joins),
            ..PageInputs::default()
        });
        assert_eq!(md.matches("## Signaling").count(), 1);
        assert!(
            md.contains("| 10 | 9 | 1 | 1.50 | 6.0 | 420 / 610 / 640 | – | 25 % | 50 % |"),
            "{md}"
        );
        assert!(!page(&PageInputs::default()).contains("## Signaling"));
    }
}
