//! Tables and plots of comparison results.
//!
//! `tables.rs` writes the Markdown table, `summary.rs` the findings under it (best
//! speed-ups, matched compute), `plots.rs` the SVG plots, and `chart.rs` the line chart
//! every plot of the program draws.

mod chart;
mod plots;
mod summary;
mod tables;

pub(crate) use chart::{ChartSpec, line_chart};
pub use plots::{accuracy_plot, ece_plot, histogram_plot, reliability_plot, reliability_plots};
pub use summary::{matched_compute, summary};
pub use tables::table;
