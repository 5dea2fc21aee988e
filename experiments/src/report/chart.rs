//! The line chart every plot of the program draws (comparison, language model, parity,
//! token exit), its colour cycle, and plotting errors.

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// The plots' colour cycle.
pub(crate) const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// A plotting error as an `anyhow` error.
pub(crate) fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e:?}")
}

/// Axes, size and legend placement of a [`line_chart`].
pub(crate) struct ChartSpec<'a> {
    /// Title.
    pub caption: String,
    /// x-axis label.
    pub x_desc: &'a str,
    /// y-axis label.
    pub y_desc: &'a str,
    /// x range.
    pub x: std::ops::Range<f64>,
    /// y range.
    pub y: std::ops::Range<f64>,
    /// Width and height in pixels.
    pub size: (u32, u32),
    /// Where the legend goes.
    pub legend: SeriesLabelPosition,
}

/// Labelled lines with a marker at every point, one colour each (in order), as SVG.
pub(crate) fn line_chart(
    spec: ChartSpec<'_>,
    lines: &[(String, Vec<(f64, f64)>)],
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, spec.size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(spec.caption, ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(spec.x, spec.y)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(spec.x_desc)
            .y_desc(spec.y_desc)
            .draw()
            .map_err(plot_err)?;
        for (i, (label, points)) in lines.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            // past the colour cycle, other markers tell lines of one colour apart
            match i / COLORS.len() {
                0 => chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map(|_| ()),
                1 => chart
                    .draw_series(
                        points
                            .iter()
                            .map(|&p| TriangleMarker::new(p, 5, color.filled())),
                    )
                    .map(|_| ()),
                _ => chart
                    .draw_series(
                        points
                            .iter()
                            .map(|&p| Cross::new(p, 4, color.stroke_width(2))),
                    )
                    .map(|_| ()),
            }
            .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(spec.legend)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}
