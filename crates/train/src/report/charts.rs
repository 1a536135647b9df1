//! The report's charts: test-accuracy curves and, for a sweep, accuracy against the swept
//! setting.

use super::{mean_std, Report};
use crate::plot::{Chart, Series};
use std::collections::BTreeMap;

impl Report {
    /// Test accuracy per epoch of each group's headline entry, averaged over seeds.
    pub fn curves_chart(&self, title: &str) -> Chart {
        let mut chart = Chart {
            title: format!("{title}: test accuracy"),
            x_label: "epoch".into(),
            y_label: "test accuracy (%)".into(),
            ..Default::default()
        };
        for g in &self.groups {
            let r0 = &g.runs[0];
            let entry = r0.summary.students[r0.headline()];
            let curves: Vec<(Vec<f64>, Vec<f64>)> = g
                .runs
                .iter()
                .filter_map(|r| {
                    let c = r.metrics.as_ref()?.test_curve(entry);
                    (!c.is_empty()).then(|| c.into_iter().unzip())
                })
                .collect();
            let Some(len) = curves.iter().map(|c| c.1.len()).min() else {
                continue;
            };
            let xs = curves[0].0[..len].to_vec();
            let ys: Vec<f64> = (0..len)
                .map(|i| curves.iter().map(|c| c.1[i]).sum::<f64>() / curves.len() as f64)
                .collect();
            chart.series.push(Series::new(g.label(), &xs, &ys));
        }
        chart
    }

    /// Best accuracy against the swept setting ([`Report::swept`]): one line per method and
    /// combination of the other varying settings (`scd attention=sq_mean target=next`), and a
    /// horizontal line for each group without the setting (CE).
    pub fn sweep_chart(&self, title: &str) -> Option<Chart> {
        let key = self.swept()?;
        let mut by_line: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
        let mut references = Vec::new();
        for g in &self.groups {
            let head = g.runs[0].headline();
            let (m, s) = mean_std(&g.accs(head, true));
            let Some((_, v)) = g.settings.iter().find(|(k, _)| *k == key) else {
                let label = match s {
                    Some(_) => format!("{} (mean ± std, {} seeds)", g.label(), g.runs.len()),
                    None => g.label(),
                };
                references.push((label, m, s.unwrap_or(0.0)));
                continue;
            };
            by_line.entry(g.label_without(&key)).or_default().push((
                v.parse().ok()?,
                m,
                s.unwrap_or(0.0),
            ));
        }
        let mut series = Vec::new();
        let mut positive = true;
        let mut xs_all = Vec::new();
        for (label, mut pts) in by_line {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            positive &= pts.iter().all(|p| p.0 > 0.0);
            xs_all.extend(pts.iter().map(|p| p.0));
            series.push(Series {
                label,
                points: pts.iter().map(|p| (p.0, p.1)).collect(),
                errors: Some(pts.iter().map(|p| p.2).collect()),
            });
        }
        let (lo, hi) = xs_all
            .iter()
            .fold((f64::INFINITY, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
        Some(Chart {
            title: format!("{title}: best test accuracy against {key}"),
            x_label: key,
            y_label: "best test accuracy (%)".into(),
            series,
            references,
            log_x: positive && hi / lo >= 20.0,
        })
    }
}
