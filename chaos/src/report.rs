//! `report.html`: the verdict, the figures, and three SVG plots drawn with plotters (latency
//! over time with the fault windows shaded, throughput over time, failover durations). One
//! self-contained file: it can be attached to a CI run or a bug report.

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::checks::{failovers, RunData, Verdict};
use crate::history::Outcome;
use crate::nemesis::FaultKind;

/// Points drawn per outcome in the latency plot; more are thinned evenly (the SVG stays a
/// few MB at most).
const MAX_POINTS: usize = 6000;
/// Width shown for an instantaneous fault (restart, switchover, failback).
const INSTANT_FAULT_S: f64 = 0.15;
const WIDTH_PX: u32 = 1000;
const HEIGHT_PX: u32 = 340;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// (start s, end s, kind) of every fault, relative to the workload start.
fn fault_windows(data: &RunData) -> Vec<(f64, f64, FaultKind)> {
    let t0 = data.meta.start_ns;
    let s = |ns: u64| ns.saturating_sub(t0) as f64 / 1e9;
    let mut out = Vec::new();
    for (i, f) in data.faults.iter().enumerate() {
        if f.phase != "start" {
            continue;
        }
        let heal = data.faults[i + 1..]
            .iter()
            .find(|h| h.phase == "heal" && h.kind == f.kind && h.node == f.node)
            .map(|h| s(h.time_ns));
        let start = s(f.time_ns);
        let end = match heal {
            Some(e) if f.kind.lasts() => e,
            _ => start + INSTANT_FAULT_S,
        };
        out.push((start, end, f.kind));
    }
    out
}

fn fault_color(k: FaultKind) -> RGBAColor {
    match k {
        FaultKind::Kill => RGBColor(230, 80, 80).mix(0.25),
        FaultKind::Pause => RGBColor(80, 120, 230).mix(0.25),
        FaultKind::Restart => RGBColor(160, 80, 200).mix(0.5),
        FaultKind::Switchover => RGBColor(40, 160, 90).mix(0.5),
        FaultKind::Failback => RGBColor(200, 150, 30).mix(0.5),
        FaultKind::Partition => RGBColor(120, 120, 120).mix(0.3),
        FaultKind::Loss => RGBColor(40, 180, 200).mix(0.25),
        FaultKind::Link => RGBColor(90, 60, 30).mix(0.3),
        FaultKind::Stall => RGBColor(230, 140, 60).mix(0.3),
    }
}

type PlotResult = Result<(), String>;
type Plot = fn(&RunData, &mut String) -> PlotResult;

fn latency_plot(data: &RunData, out: &mut String) -> PlotResult {
    let t0 = data.meta.start_ns;
    let x_max = (data.meta.end_ns.saturating_sub(t0) as f64 / 1e9).max(1.0) + 1.0;
    let mut series: Vec<(Outcome, Vec<(f64, f64)>)> = Vec::new();
    let mut y_max = 10.0f64;
    for outcome in [Outcome::Ok, Outcome::Info, Outcome::Fail] {
        let pts: Vec<(f64, f64)> = data
            .ops
            .iter()
            .filter(|o| o.outcome == outcome && !o.final_read)
            .filter_map(|o| {
                let lat = o.latency_ns()? as f64 / 1e6;
                Some((o.invoke_ns.saturating_sub(t0) as f64 / 1e9, lat.max(0.01)))
            })
            .collect();
        let step = pts.len().div_ceil(MAX_POINTS).max(1);
        let pts: Vec<(f64, f64)> = pts.into_iter().step_by(step).collect();
        y_max = pts.iter().map(|p| p.1).fold(y_max, f64::max);
        series.push((outcome, pts));
    }
    let y_min = 0.1f64;
    let y_max = y_max * 1.5;
    let root = SVGBackend::with_string(out, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Latency of each operation (by invocation time)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("latency ms (log)")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(
            fault_windows(data)
                .into_iter()
                .map(|(a, b, k)| Rectangle::new([(a, y_min), (b, y_max)], fault_color(k).filled())),
        )
        .map_err(|e| e.to_string())?;
    for (outcome, pts) in series {
        let (color, label) = match outcome {
            Outcome::Ok => (RGBColor(30, 140, 60), "ok"),
            Outcome::Info => (RGBColor(230, 140, 0), "info (unknown outcome)"),
            Outcome::Fail => (RGBColor(200, 30, 30), "fail"),
        };
        chart
            .draw_series(
                pts.into_iter()
                    .map(move |p| Circle::new(p, 2, color.mix(0.6).filled())),
            )
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn throughput_plot(data: &RunData, out: &mut String) -> PlotResult {
    let t0 = data.meta.start_ns;
    let secs = (data.meta.end_ns.saturating_sub(t0) / 1_000_000_000 + 1) as usize;
    let mut ok = vec![0u32; secs];
    let mut bad = vec![0u32; secs];
    for o in data.ops.iter().filter(|o| !o.final_read) {
        let Some(c) = o.complete_ns else { continue };
        let b = (c.saturating_sub(t0) / 1_000_000_000) as usize;
        if b < secs {
            if o.outcome == Outcome::Ok {
                ok[b] += 1;
            } else {
                bad[b] += 1;
            }
        }
    }
    let y_max = ok.iter().chain(&bad).copied().max().unwrap_or(1).max(1) as f64 * 1.15;
    let root = SVGBackend::with_string(out, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput (completed operations per second)",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..secs as f64, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("ops/s")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(
            fault_windows(data)
                .into_iter()
                .map(|(a, b, k)| Rectangle::new([(a, 0.0), (b, y_max)], fault_color(k).filled())),
        )
        .map_err(|e| e.to_string())?;
    for (vals, color, label) in [
        (&ok, RGBColor(30, 140, 60), "ok"),
        (&bad, RGBColor(200, 30, 30), "fail + info"),
    ] {
        chart
            .draw_series(LineSeries::new(
                vals.iter()
                    .enumerate()
                    .map(|(i, v)| (i as f64 + 0.5, *v as f64)),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn failover_plot(data: &RunData, out: &mut String) -> PlotResult {
    let fo = failovers(&data.faults, &data.hooks);
    let y_max = fo.iter().map(|f| f.ms).fold(100.0, f64::max) * 1.15;
    let n = fo.len().max(1) as f64;
    let root = SVGBackend::with_string(out, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Failover durations: fault to the new primary's promote hook",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..n, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("failover # (colour: fault kind)")
        .y_desc("ms")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(fo.iter().enumerate().map(|(i, f)| {
            let c = fault_color(f.fault).to_rgba();
            let solid = RGBColor(c.0, c.1, c.2);
            Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, f.ms)],
                solid.filled(),
            )
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// The whole report; a plot that cannot be drawn is replaced by its error text.
pub fn html(data: &RunData, v: &Verdict) -> String {
    let mut h = String::new();
    let verdict = if v.pass { "PASS" } else { "FAIL" };
    let color = if v.pass { "#1e8c3c" } else { "#c81e1e" };
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>quorate-chaos {verdict}</title>\
         <style>body{{font-family:sans-serif;max-width:1040px;margin:20px auto}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
         pre{{background:#f4f4f4;padding:8px;overflow-x:auto;font-size:12px}}</style></head><body>\
         <h1>quorate-chaos: <span style=\"color:{color}\">{verdict}</span></h1>"
    );
    let m = &data.meta;
    let _ = write!(
        h,
        "<p>backend {} · workload {:?} · {} nodes · {} clients · seed {} · {:.0} s · nemesis {}</p>",
        escape(&m.backend),
        m.workload,
        m.nodes,
        m.clients,
        m.seed,
        m.duration_ms as f64 / 1000.0,
        m.nemesis
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    h.push_str("<h2>Checks</h2><table><tr><th>check</th><th>result</th><th>anomalies</th><th>figures</th></tr>");
    for c in &v.checks {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            c.name,
            if c.passed {
                "ok"
            } else {
                "<b style=\"color:#c81e1e\">FAIL</b>"
            },
            c.anomaly_count,
            escape(&c.stats.to_string())
        );
    }
    h.push_str("</table>");
    for c in v.checks.iter().filter(|c| !c.passed) {
        let _ = write!(h, "<h3>{} anomalies</h3><pre>", c.name);
        for a in &c.anomalies {
            let _ = writeln!(
                h,
                "{}",
                escape(&serde_json::to_string_pretty(a).unwrap_or_default())
            );
        }
        h.push_str("</pre>");
    }
    h.push_str("<h2>Plots</h2><p>Shaded: kill (red), pause (blue), restart (purple), switchover (green), failback (amber), partition (grey), loss (cyan), link down (brown).</p>");
    let plots: [(&str, Plot); 3] = [
        ("latency", latency_plot),
        ("throughput", throughput_plot),
        ("failovers", failover_plot),
    ];
    for (name, plot) in plots {
        let mut svg = String::new();
        match plot(data, &mut svg) {
            Ok(()) => {
                h.push_str("<div>");
                h.push_str(&svg);
                h.push_str("</div>");
            }
            Err(e) => {
                let _ = write!(h, "<p>{name} plot unavailable: {}</p>", escape(&e));
            }
        }
    }
    let _ = write!(
        h,
        "<h2>Summary</h2><pre>{}</pre></body></html>",
        escape(&serde_json::to_string_pretty(&v.summary).unwrap_or_default())
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{verdict, Convergence, RunMeta, Workload};
    use crate::history::testing::ops;
    use crate::history::Function::{Read, Write};
    use crate::nemesis::FaultEvent;
    use serde_json::{json, Value::Null};

    #[test]
    fn report_embeds_three_svgs_and_the_verdict() {
        let s = 1_000_000_000u64;
        let data = RunData {
            meta: RunMeta {
                backend: "local".into(),
                workload: Workload::Register,
                nodes: 3,
                clients: 2,
                seed: 7,
                duration_ms: 5000,
                nemesis: vec![FaultKind::Kill],
                schedule: vec![],
                start_ns: 0,
                end_ns: 5 * s,
                converge_bound_ms: 1000,
                node_env: vec![],
                max_service_lag_bytes: None,
            },
            ops: ops(&[
                (
                    0,
                    Write,
                    "k",
                    json!(1),
                    s,
                    Some(s + 5_000_000),
                    Outcome::Ok,
                    Null,
                ),
                (
                    1,
                    Read,
                    "k",
                    Null,
                    2 * s,
                    Some(2 * s + 1),
                    Outcome::Ok,
                    json!(1),
                ),
            ]),
            faults: vec![
                FaultEvent {
                    time_ns: 2 * s,
                    kind: FaultKind::Kill,
                    phase: "start".into(),
                    node: Some(1),
                    primary_before: Some(1),
                    detail: String::new(),
                },
                FaultEvent {
                    time_ns: 3 * s,
                    kind: FaultKind::Kill,
                    phase: "heal".into(),
                    node: Some(1),
                    primary_before: None,
                    detail: String::new(),
                },
            ],
            hooks: vec![crate::hooklog::HookEvent {
                at_ns: 2 * s + 300_000_000,
                node: 2,
                event: "promote".into(),
                epoch: 2,
            }],
            convergence: Convergence {
                converged: true,
                primary: Some(2),
                epoch: 2,
                ..Default::default()
            },
            positions: Vec::new(),
        };
        let v = verdict(&data);
        assert!(v.pass, "{:?}", v.checks);
        let html = html(&data, &v);
        assert_eq!(html.matches("<svg").count(), 3, "{html}");
        assert!(html.contains("PASS"));
        assert!(!html.contains("plot unavailable"));
        assert_eq!(fault_windows(&data), vec![(2.0, 3.0, FaultKind::Kill)]);
    }
}
