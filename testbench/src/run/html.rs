//! The self-contained HTML report.

use super::report::Report;

/// The report as one HTML page.
pub fn render(r: &Report) -> String {
    format!(
        "<!doctype html><title>{}</title><pre>{}</pre>",
        r.scenario,
        r.table()
    )
}
